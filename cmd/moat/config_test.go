package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// Every configuration key appears in moat.example.yaml, set or commented
// out, so the example really documents all of them.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../moat.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	collectKeys(reflect.TypeOf(Config{}), &keys)
	if len(keys) < 20 {
		t.Fatalf("found only %d keys: %v", len(keys), keys)
	}
	for _, k := range keys {
		re := regexp.MustCompile(`(?m)^[ \t]*#?[ \t]*` + regexp.QuoteMeta(k) + `:`)
		if !re.Match(data) {
			t.Errorf("moat.example.yaml does not document %q", k)
		}
	}
}

func collectKeys(t reflect.Type, keys *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if strings.Contains(opts, "inline") {
			collectKeys(ft, keys)
			continue
		}
		*keys = append(*keys, name)
		if ft.Kind() == reflect.Struct && ft.NumField() > 0 && ft.Field(0).IsExported() && ft.Field(0).Tag.Get("yaml") != "" {
			collectKeys(ft, keys)
		}
	}
}
