package smtp

import (
	"errors"
	"testing"
)

var commandTests = []struct {
	in   string
	want Command
	ok   bool
}{
	{"EHLO mx.example.com", Command{VerbEHLO, "mx.example.com"}, true},
	{"ehlo mx.example.com", Command{VerbEHLO, "mx.example.com"}, true},
	{"HeLo x", Command{VerbHELO, "x"}, true},
	{"MAIL FROM:<a@example.com> SIZE=10", Command{VerbMAIL, "FROM:<a@example.com> SIZE=10"}, true},
	{"mail from:<>", Command{VerbMAIL, "from:<>"}, true},
	{"RCPT TO:<b@example.com>", Command{VerbRCPT, "TO:<b@example.com>"}, true},
	{"RCPT  TO:<b@example.com>", Command{VerbRCPT, " TO:<b@example.com>"}, true},
	{"DATA", Command{VerbDATA, ""}, true},
	{"data", Command{VerbDATA, ""}, true},
	{"DATA ", Command{VerbDATA, ""}, true},
	{"QUIT   ", Command{VerbQUIT, ""}, true},
	{"BDAT 100 LAST", Command{VerbBDAT, "100 LAST"}, true},
	{"RSET", Command{VerbRSET, ""}, true},
	{"NOOP anything at all", Command{VerbNOOP, "anything at all"}, true},
	{"VRFY user", Command{VerbVRFY, "user"}, true},
	{"EXPN list", Command{VerbEXPN, "list"}, true},
	{"HELP", Command{VerbHELP, ""}, true},
	{"StartTLS", Command{VerbSTARTTLS, ""}, true},
	{"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Command{VerbAUTH, "PLAIN AGFsaWNlAHNlY3JldA=="}, true},
	{"XCLIENT NAME=spike.porcupine.org ADDR=168.100.189.2", Command{VerbXCLIENT, "NAME=spike.porcupine.org ADDR=168.100.189.2"}, true},
	{"ETRN example.com", Command{VerbETRN, "example.com"}, true},
	{"xyzzy", Command{"XYZZY", ""}, true},
	{"Foo bar baz", Command{"FOO", "bar baz"}, true},
	{"HELO a\tb", Command{VerbHELO, "a\tb"}, true},
	{"HELO a\t", Command{VerbHELO, "a"}, true},
	{"HELO \xc3\xa9t\xc3\xa9", Command{VerbHELO, "\xc3\xa9t\xc3\xa9"}, true},
	{"HELO \xff", Command{VerbHELO, "\xff"}, true},
	{"EH LO", Command{"EH", "LO"}, true},

	{"", Command{}, false},
	{" EHLO x", Command{}, false},
	{"\tEHLO x", Command{}, false},
	{"EHLO\tx", Command{}, false},
	{"EHLO1 x", Command{}, false},
	{"E-HLO x", Command{}, false},
	{"1234", Command{}, false},
	{"MAIL:FROM:<>", Command{}, false},
	{"EHLO\x00", Command{}, false},
	{"EHLO x\x00", Command{}, false},
	{"MAIL FROM:<a@b>\x00RCPT TO:<c@d>", Command{}, false},
	{"HELO a\rb", Command{}, false},
	{"HELO a\r", Command{}, false},
	{"HELO a\nb", Command{}, false},
	{"HELO a\x7f", Command{}, false},
	{"HELO a\x1b[31m", Command{}, false},
	{"\xc3\x89HLO x", Command{}, false},
}

func TestParseCommand(t *testing.T) {
	for _, tt := range commandTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCommand([]byte(tt.in))
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseCommand(%q) = %+v, want error", tt.in, got)
				}
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("ParseCommand(%q) error %v does not wrap ErrSyntax", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCommand(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseCommand(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := ParseCommand([]byte(got.String()))
			if err != nil || again != got {
				t.Fatalf("round trip of %q via %q = %+v, %v", tt.in, got.String(), again, err)
			}
		})
	}
}

func TestCommandString(t *testing.T) {
	for _, tt := range []struct {
		c    Command
		want string
	}{
		{Command{VerbDATA, ""}, "DATA"},
		{Command{VerbMAIL, "FROM:<>"}, "MAIL FROM:<>"},
		{Command{VerbRCPT, " TO:<a@b>"}, "RCPT  TO:<a@b>"},
	} {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.c, got, tt.want)
		}
	}
}

func TestParseCommandKnownVerbsDoNotAllocate(t *testing.T) {
	for _, line := range []string{"data", "QUIT", "StartTLS", "rset", "xclient"} {
		b := []byte(line)
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := ParseCommand(b); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("ParseCommand(%q) allocates %v times, want 0", line, allocs)
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	lines := [][]byte{
		[]byte("MAIL FROM:<someone@example.com> SIZE=12345 BODY=8BITMIME"),
		[]byte("RCPT TO:<recipient@example.org>"),
		[]byte("DATA"),
		[]byte("noop"),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := ParseCommand(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
}
