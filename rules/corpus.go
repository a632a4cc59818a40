package rules

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// ReadCorpus calls fn for every message found under paths: .eml (or any)
// files holding one message, mbox files (several messages, each starting
// with a "From " line; ">From " unescaped), and Maildir folders (the
// messages in cur/ and new/) or plain directories, walked in name order.
// Messages are handed over with CRLF line endings, as after DATA.
func ReadCorpus(paths []string, fn func(name string, msg []byte) error) error {
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			if err := readDir(p, fn); err != nil {
				return err
			}
			continue
		}
		if err := readFile(p, fn); err != nil {
			return err
		}
	}
	return nil
}

func readDir(dir string, fn func(string, []byte) error) error {
	var files []string
	if isMaildir(dir) {
		for _, sub := range []string{"cur", "new"} {
			entries, err := os.ReadDir(filepath.Join(dir, sub))
			if err != nil {
				return err
			}
			for _, e := range entries {
				if e.Type().IsRegular() {
					files = append(files, filepath.Join(dir, sub, e.Name()))
				}
			}
		}
	} else {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	sort.Strings(files)
	for _, f := range files {
		if err := readFile(f, fn); err != nil {
			return err
		}
	}
	return nil
}

func isMaildir(dir string) bool {
	for _, sub := range []string{"cur", "new"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err != nil || !st.IsDir() {
			return false
		}
	}
	return true
}

// readFile hands over one message, or each message of an mbox.
func readFile(path string, fn func(string, []byte) error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(data, []byte("From ")) {
		return fn(path, crlf(data))
	}
	// mbox (mboxrd): a message starts at each "From " line at the start
	// of the file or after an empty line.
	r := bufio.NewReader(bytes.NewReader(data))
	var msg bytes.Buffer
	n := 0
	prevEmpty := true
	flush := func() error {
		if msg.Len() == 0 {
			return nil
		}
		n++
		b := bytes.TrimSuffix(msg.Bytes(), []byte("\n"))
		err := fn(fmt.Sprintf("%s#%d", path, n), crlf(append([]byte(nil), b...)))
		msg.Reset()
		return err
	}
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			switch {
			case prevEmpty && bytes.HasPrefix(line, []byte("From ")):
				if ferr := flush(); ferr != nil {
					return ferr
				}
			case isQuotedFrom(line):
				msg.Write(line[1:])
			default:
				msg.Write(line)
			}
			prevEmpty = len(bytes.TrimRight(line, "\r\n")) == 0
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return flush()
}

// isQuotedFrom matches mboxrd's escaped ">From ", ">>From ", ...
func isQuotedFrom(line []byte) bool {
	i := 0
	for i < len(line) && line[i] == '>' {
		i++
	}
	return i > 0 && bytes.HasPrefix(line[i:], []byte("From "))
}

// crlf makes every line end in CRLF, as a message arrives after DATA.
func crlf(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+bytes.Count(b, []byte("\n")))
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
