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

// parseSubcommand parses "SUB [flags and arguments in any order]", the
// shape of moat dnsbl check and moat auth check: args must start with
// sub (or ask for help); flags may come before, between or after the
// positional arguments, which it returns. ok and code are parseFlags'.
func parseSubcommand(fs *flag.FlagSet, args []string, sub string, stdout io.Writer) (positional []string, ok bool, code int) {
	if len(args) == 0 || args[0] != sub {
		if len(args) > 0 && isHelp(args[0]) {
			printUsage(fs, stdout)
			return nil, false, 0
		}
		fs.Usage()
		return nil, false, exitUsage
	}
	rest := args[1:]
	for {
		if ok, code := parseFlags(fs, rest, stdout); !ok {
			return nil, false, code
		}
		if fs.NArg() == 0 {
			return positional, true, 0
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
}

// printUsage prints fs's usage to w instead of the set's output.
func printUsage(fs *flag.FlagSet, w io.Writer) {
	out := fs.Output()
	fs.SetOutput(w)
	fs.Usage()
	fs.SetOutput(out)
}
