package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Every subcommand reads its flags the same way: errors and usage go to
// standard error with exit status exitUsage; --help (or -h) prints the
// usage once, to standard output, with exit status 0, so that
// "moat CMD --help | less" shows it.

// newFlagSet returns the flag set of a subcommand. Its Usage prints usage,
// then, when the command has flags, "Flags:" and each flag with its
// default, to the set's output (standard error).
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args with fs. It reports ok when the command should
// go on; otherwise code is its exit status: 0 after --help, exitUsage
// after a bad flag (flag's message and the usage on standard error).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (ok bool, code int) {
	usage := fs.Usage
	// flag.FlagSet calls Usage itself on -help, to standard error; it is
	// printed below instead, once, to the right stream.
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case err == nil:
		return true, 0
	case errors.Is(err, flag.ErrHelp):
		printUsage(fs, stdout)
		return false, 0
	default:
		fs.Usage()
		return false, exitUsage
	}
}

// printUsage prints fs's usage to w instead of the set's output.
func printUsage(fs *flag.FlagSet, w io.Writer) {
	out := fs.Output()
	fs.SetOutput(w)
	fs.Usage()
	fs.SetOutput(out)
}
