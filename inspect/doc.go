// Package inspect holds moat's session model and the Engine that judges it.
//
// An SMTP session moves through five stages — connect, helo, mail, rcpt and
// data — and at each one the front end (the live proxy or the offline
// capture analyser) records what it has learned in a Session and asks the
// Engine for a Verdict. Both front ends call the Engine in the same order
// with the same facts, so a rule behaves identically live and offline.
//
// The package knows nothing about sockets, packets or YAML: facts come in as
// plain values, verdicts go out as plain values, and the front end decides
// how to put a verdict on the wire.
package inspect
