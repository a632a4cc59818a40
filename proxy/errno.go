package proxy

import "syscall"

// errTooManyFiles is what accept returns when the process is out of file
// descriptors; Serve backs off instead of giving up.
var errTooManyFiles error = syscall.EMFILE
