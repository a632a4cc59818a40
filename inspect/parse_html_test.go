package inspect

import (
	"slices"
	"strings"
	"testing"
)

func TestHTMLText(t *testing.T) {
	tests := []struct {
		name string
		html string
		text string
		urls []string
	}{
		{"tags stripped, entities decoded", "<p>Fish &amp; Chips &lt;3 &eacute;&#233;&#xE9;</p>", "Fish & Chips <3 ééé", nil},
		{"whitespace collapsed", "a  \r\n\t b&nbsp;&nbsp;c", "a b c", nil},
		{"block elements break lines", "<div>one</div><div>two<br>three</div><p>four</p>", "one\ntwo\nthree\nfour", nil},
		{"table cells are spaced", "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc", nil},
		{"script, style, title and comments are not visible", "<html><head><title>T</title><style>p{color:red}</style></head><body><!-- hidden -->x<script>var s='<p>no</p>';</script>y</body></html>", "xy", nil},
		{"abrupt comment", "a<!-->b", "ab", nil},
		{"noscript content is what mail clients show", "<noscript><b>shown</b></noscript>", "shown", nil},
		{"links from href, src, action, background", `<a href="http://a.example/x">click</a><img src="https://img.example/p.png"><form action="http://form.example/"></form><td background="http://bg.example/i.gif">`, "click",
			[]string{"http://a.example/x", "https://img.example/p.png", "http://form.example/", "http://bg.example/i.gif"}},
		{"entity-encoded link", `<a href="http://a.example/?a=1&amp;b=2">x</a>`, "x", []string{"http://a.example/?a=1&b=2"}},
		{"relative and mailto links ignored", `<a href="/local">x</a><a href="mailto:a@b.example">y</a><a href="#top">z</a>`, "xyz", nil},
		{"unquoted attribute", `<A HREF=http://up.example/>x</A>`, "x", []string{"http://up.example/"}},
		{"text URL not in a tag", "<p>see www.text.example</p>", "see www.text.example", nil},
		{"unclosed tag at the end", "text<a href=\"http://x.example", "text", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := urlSet{max: 100, flaws: &flaws{}}
			got, truncated := htmlText(tt.html, &s, 1000)
			if got != tt.text || truncated {
				t.Errorf("text = %q (truncated %v), want %q", got, truncated, tt.text)
			}
			var urls []string
			for _, u := range s.list {
				urls = append(urls, u.Raw)
			}
			if !slices.Equal(urls, tt.urls) {
				t.Errorf("URLs = %q, want %q", urls, tt.urls)
			}
		})
	}
}

func TestHTMLTextLimit(t *testing.T) {
	s := urlSet{max: 10, flaws: &flaws{}}
	got, truncated := htmlText("<p>"+strings.Repeat("word ", 1000)+"</p>", &s, 100)
	if !truncated || len(got) > 100 {
		t.Errorf("%d bytes, truncated %v", len(got), truncated)
	}
}

// HTML parts give HTML, HTMLText and URLs; the URLs of the visible text
// are found too.
func TestHTMLPart(t *testing.T) {
	msg := "Content-Type: text/html; charset=utf-8\r\n\r\n" +
		"<html><body><a href=\"http://link.example/\">Visit</a> www.visible.example</body></html>\r\n"
	c := parse(msg, DepthText)
	checkContent(t, c, int64(len(msg)), DepthText)
	if !strings.HasPrefix(c.HTML, "<html>") || c.HTMLText != "Visit www.visible.example" || c.Text != "" {
		t.Errorf("HTML %q, HTMLText %q, Text %q", c.HTML, c.HTMLText, c.Text)
	}
	want := []URL{{"http://link.example/", "link.example"}, {"www.visible.example", "www.visible.example"}}
	if !slices.Equal(c.URLs, want) {
		t.Errorf("URLs = %q, want %q", c.URLs, want)
	}
}
