// Package strictyaml decodes YAML configuration into Go structs and refuses
// anything it does not understand, with errors an operator can act on:
// the file, line and column, and the dotted key ("upstream.address").
//
// yaml.v3's Decoder.KnownFields reports unknown keys, but with Go type
// names instead of key paths, and a custom UnmarshalYAML that calls
// Node.Decode silently loses the check. This package walks the node tree
// itself: structs are matched key by key against their yaml tags (inline
// structs included); every other value is handed to Node.Decode, so types
// that implement yaml.Unmarshaler validate themselves and their errors are
// reported at their node.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a configuration error at a place in a file.
type Error struct {
	File      string
	Line, Col int    // 1-based; 0 when not known
	Key       string // dotted path of the offending key, "" for the document
	Msg       string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Decode parses data (named file in errors) into out, which must be a
// pointer to a struct. An empty document leaves out unchanged.
func Decode(file string, data []byte, out any) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return syntaxError(file, err)
	}
	// A second document would be silently ignored: refuse it.
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return &Error{File: file, Line: extra.Line, Col: extra.Column, Msg: "more than one YAML document"}
	}
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("strictyaml: Decode needs a pointer to a struct")
	}
	d := decoder{file: file}
	return d.decode(&doc, v.Elem(), "")
}

var lineRe = regexp.MustCompile(`^yaml: line (\d+): `)

// syntaxError turns a yaml.v3 parse error into an Error with its line.
func syntaxError(file string, err error) error {
	msg := err.Error()
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Col: 1, Msg: "YAML syntax: " + msg[len(m[0]):]}
	}
	return &Error{File: file, Msg: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")}
}

type decoder struct{ file string }

func (d *decoder) errAt(n *yaml.Node, key, format string, args ...any) error {
	return &Error{File: d.file, Line: n.Line, Col: n.Column, Key: key, Msg: fmt.Sprintf(format, args...)}
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return d.decode(n.Content[0], v, path)
	case yaml.AliasNode:
		return d.decode(n.Alias, v, path)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "key:" with no value keeps the default
	}
	custom := reflect.PointerTo(v.Type()).Implements(unmarshalerType)
	switch {
	case v.Kind() == reflect.Struct && !custom:
		return d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() != reflect.Uint8 && !custom:
		// Element by element, so an error points at the element.
		if n.Kind == yaml.ScalarNode {
			// A single value where a list is expected is a list of one.
			n = &yaml.Node{Kind: yaml.SequenceNode, Line: n.Line, Column: n.Column, Content: []*yaml.Node{n}}
		}
		if n.Kind != yaml.SequenceNode {
			return d.errAt(n, path, "expected a list")
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case v.Kind() == reflect.Map && isPlainStruct(v.Type().Elem()) && v.Type().Key().Kind() == reflect.String:
		if n.Kind != yaml.MappingNode {
			return d.errAt(n, path, "expected a mapping")
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			e := reflect.New(v.Type().Elem()).Elem()
			if err := d.decode(val, e, join(path, k.Value)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
		}
		v.Set(m)
		return nil
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return d.errAt(n, path, "%s", cleanDecodeError(err))
	}
	return nil
}

func isPlainStruct(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(unmarshalerType)
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errAt(n, path, "expected a mapping of keys to values")
	}
	fields := map[string][]int{}
	collectFields(v.Type(), nil, fields)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		idx, ok := fields[k.Value]
		if !ok {
			return d.errAt(k, join(path, k.Value), "unknown key (known here: %s)", knownKeys(fields))
		}
		if err := d.decode(val, v.FieldByIndex(idx), join(path, k.Value)); err != nil {
			return err
		}
	}
	return nil
}

// collectFields maps yaml key names to field index paths, descending into
// ",inline" structs.
func collectFields(t reflect.Type, prefix []int, out map[string][]int) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		idx := append(append([]int(nil), prefix...), i)
		if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
			collectFields(f.Type, idx, out)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = idx
	}
}

func knownKeys(fields map[string][]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var typeErrLine = regexp.MustCompile(`(?m)^\s*line \d+: `)

// cleanDecodeError strips yaml.v3's "unmarshal errors" wrapping and line
// prefix, which Error already carries.
func cleanDecodeError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = typeErrLine.ReplaceAllString(msg, "")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.ReplaceAll(msg, "!!str", "string")
	msg = strings.ReplaceAll(msg, "!!int", "integer")
	msg = strings.ReplaceAll(msg, "!!map", "mapping")
	msg = strings.ReplaceAll(msg, "!!seq", "list")
	msg = strings.ReplaceAll(msg, "!!bool", "boolean")
	msg = strings.ReplaceAll(msg, "!!float", "number")
	return strings.TrimSpace(msg)
}
