package dashboards

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// A small PromQL scanner for the checks: it finds every vector selector
// in an expression, with its matchers, its range and the function it is
// the argument of. It does not validate syntax (promtool does that, in
// TestPanelQueriesParse); it only has to read what valid PromQL means.

type tok struct {
	kind byte // 'i' identifier, 's' string, 'n' number or duration, 'p' punctuation
	text string
}

func lexPromQL(s string) ([]tok, error) {
	var out []tok
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			out = append(out, tok{'s', s[i : j+1]})
			i = j + 1
		case isDigit(c) || c == '.' && i+1 < len(s) && isDigit(s[i+1]):
			j := i
			for j < len(s) && (isAlnum(s[j]) || s[j] == '.' ||
				(s[j] == '+' || s[j] == '-') && (s[j-1] == 'e' || s[j-1] == 'E') && isDigit(s[i])) {
				j++
			}
			out = append(out, tok{'n', s[i:j]})
			i = j
		case isAlpha(c) || c == '_' || c == ':':
			j := i
			for j < len(s) && (isAlnum(s[j]) || s[j] == '_' || s[j] == ':') {
				j++
			}
			out = append(out, tok{'i', s[i:j]})
			i = j
		case strings.HasPrefix(s[i:], "=~") || strings.HasPrefix(s[i:], "!~") || strings.HasPrefix(s[i:], "!=") ||
			strings.HasPrefix(s[i:], "==") || strings.HasPrefix(s[i:], "<=") || strings.HasPrefix(s[i:], ">="):
			out = append(out, tok{'p', s[i : i+2]})
			i += 2
		case strings.ContainsRune("(){}[],=<>+-*/%^@", rune(c)):
			out = append(out, tok{'p', s[i : i+1]})
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at %d (an unexpanded variable?)", c, i)
		}
	}
	return out, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }

// selector is one vector selector: name{matchers}[range].
type selector struct {
	Name     string
	Matchers map[string]string // label -> operator and value: `=~.+`
	Range    string            // "" for an instant vector
	Func     string            // the function whose argument it is, "" if none
}

var (
	// Keywords followed by a parenthesised list of label names.
	labelListKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	// Other words that are not metric names.
	wordKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true, "inf": true, "nan": true}
	// Aggregation operators, which may come before "by (...)" instead of
	// their "(".
	aggregators = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
		"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true}
)

// selectors returns the vector selectors of expr, in order.
func selectors(expr string) ([]selector, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return nil, err
	}
	var out []selector
	var stack []string // open parentheses: the function they call, or ""
	next := func(i int, text string) bool {
		return i+1 < len(toks) && toks[i+1].kind == 'p' && toks[i+1].text == text
	}
	// skipTo returns the index of the token closing the bracket at i.
	skipTo := func(i int, open, close string) (int, error) {
		depth := 0
		for j := i; j < len(toks); j++ {
			if toks[j].kind == 'p' && toks[j].text == open {
				depth++
			}
			if toks[j].kind == 'p' && toks[j].text == close {
				if depth--; depth == 0 {
					return j, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %s", open)
	}
	matchers := func(i int, sel *selector) (int, error) { // i at "{"
		end, err := skipTo(i, "{", "}")
		if err != nil {
			return 0, err
		}
		ts := toks[i+1 : end]
		for k := 0; k < len(ts); {
			if k+2 >= len(ts) || ts[k].kind != 'i' || ts[k+1].kind != 'p' || ts[k+2].kind != 's' {
				return 0, fmt.Errorf("bad matcher near %q", ts[k].text)
			}
			v, err := strconv.Unquote(ts[k+2].text)
			if err != nil {
				return 0, err
			}
			sel.Matchers[ts[k].text] = ts[k+1].text + v
			k += 3
			if k < len(ts) && ts[k].text == "," {
				k++
			}
		}
		return end, nil
	}
	top := func() string {
		if len(stack) == 0 {
			return ""
		}
		return stack[len(stack)-1]
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == 'i' && labelListKeywords[t.text]:
			if next(i, "(") {
				if i, err = skipTo(i+1, "(", ")"); err != nil {
					return nil, err
				}
			}
		case t.kind == 'i' && wordKeywords[strings.ToLower(t.text)]:
		case t.kind == 'i' && aggregators[t.text] && i+1 < len(toks) && labelListKeywords[toks[i+1].text]:
		case t.kind == 'i' && next(i, "("):
			stack = append(stack, t.text)
			i++
		case t.kind == 'i' || t.kind == 'p' && t.text == "{":
			sel := selector{Matchers: map[string]string{}, Func: top()}
			if t.kind == 'i' {
				sel.Name = t.text
			} else {
				i-- // the "{" is the selector's own
			}
			if next(i, "{") {
				if i, err = matchers(i+1, &sel); err != nil {
					return nil, err
				}
			}
			if next(i, "[") {
				end, err := skipTo(i+1, "[", "]")
				if err != nil {
					return nil, err
				}
				for _, r := range toks[i+2 : end] {
					sel.Range += r.text
				}
				i = end
			}
			out = append(out, sel)
		case t.kind == 'p' && t.text == "(":
			stack = append(stack, "")
		case t.kind == 'p' && t.text == ")":
			if len(stack) == 0 {
				return nil, fmt.Errorf("unbalanced )")
			}
			stack = stack[:len(stack)-1]
		case t.kind == 'p' && t.text == "[": // a subquery's range
			if i, err = skipTo(i, "[", "]"); err != nil {
				return nil, err
			}
		}
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("unbalanced (")
	}
	return out, nil
}

func TestSelectors(t *testing.T) {
	expr := `histogram_quantile(0.9, sum by (le, op) (rate(a_bucket{job=~"$job", x="y\"z"}[1m])))
		/ on (instance) group_left (version) b offset 5m > bool 1e-3 and sum(increase(c_total[1h])) by (rule) or {__name__="d"}`
	got, err := selectors(expr)
	if err != nil {
		t.Fatal(err)
	}
	want := []selector{
		{Name: "a_bucket", Matchers: map[string]string{"job": "=~$job", "x": `=y"z`}, Range: "1m", Func: "rate"},
		{Name: "b", Matchers: map[string]string{}},
		{Name: "c_total", Matchers: map[string]string{}, Range: "1h", Func: "increase"},
		{Name: "", Matchers: map[string]string{"__name__": "=d"}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	for _, bad := range []string{`rate(a[1m]`, `a{b="c"`, `a{b=c}`, `a{job=~$job}`} {
		if _, err := selectors(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
