package auth

import "testing"

func TestParseTags(t *testing.T) {
	good := map[string]Tags{
		"v=1; a=rsa-sha256;":         {{"v", "1"}, {"a", "rsa-sha256"}},
		" v = 1 ;\r\n\ts=sel":        {{"v", "1"}, {"s", "sel"}},
		"b=abc\r\n def; h=From : To": {{"b", "abc\r\n def"}, {"h", "From : To"}},
		"p=":                         {{"p", ""}},
		"":                           nil,
	}
	for in, want := range good {
		got, err := ParseTags(in)
		if err != nil {
			t.Errorf("ParseTags(%q): %v", in, err)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("ParseTags(%q) = %q, want %q", in, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("ParseTags(%q)[%d] = %q, want %q", in, i, got[i], want[i])
			}
		}
	}
	for _, in := range []string{"v=1; v=2", "v", "=1", "1v=2", "v=1;;a=2", "v=a;b", "v=\x00", "v=é"} {
		if got, err := ParseTags(in); err == nil {
			t.Errorf("ParseTags(%q) = %q, want an error", in, got)
		}
	}
}

func TestStripFWS(t *testing.T) {
	if got := StripFWS("ab c\r\n\td"); got != "abcd" {
		t.Errorf("StripFWS = %q", got)
	}
}

func FuzzParseTags(f *testing.F) {
	f.Add("v=1; a=rsa-sha256; d=example.com; s=sel; h=From:To; bh=abc=; b=def")
	f.Add("i=1; a=rsa-sha256; cv=pass; d=example.org; s=arc; t=12345; b=xyz")
	f.Add(" v = 1 ;\r\n\ts=sel;")
	f.Fuzz(func(t *testing.T, s string) {
		tags, err := ParseTags(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, tg := range tags {
			if seen[tg.Name] || !validTagName(tg.Name) || !validTagValue(tg.Value) {
				t.Fatalf("ParseTags(%q) returned %q", s, tags)
			}
			seen[tg.Name] = true
		}
	})
}
