package replay

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"moat/capture"
	"moat/internal/pcaptest"
	"moat/internal/postfixtest"
)

// The replay tests send recorded sessions to a real Postfix and read what
// it delivered. Its recipient restrictions refuse rcpt1@example.net, so
// that one generated session diverges from its recording; every other
// domain the captures use is delivered to the test Maildir too.
func TestReplay(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		"virtual_mailbox_domains = example.net, yahoo.co.in, yahoo.com, hotmail.com, outlook.com, localhost",
		"smtpd_recipient_restrictions = check_recipient_access inline:{ rcpt1@example.net=REJECT }, permit_mynetworks, reject_unauth_destination",
	}})
	replay := func(t *testing.T, src capture.Source, opts Options) (*Stats, []*Session) {
		t.Helper()
		t.Cleanup(func() { src.Close() })
		opts.To = pf.Addr
		if opts.Timeout == 0 {
			opts.Timeout = 20 * time.Second
		}
		var got []*Session
		opts.Session = func(rs *Session) { got = append(got, rs) }
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := Run(ctx, capture.Config{SpoolDir: t.TempDir()}, src, opts)
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		return st, got
	}
	delivered := 0
	subjects := func(t *testing.T, n int) []string {
		t.Helper()
		delivered += n
		var out []string
		for _, m := range pf.WaitMessages(t, delivered, 30*time.Second) {
			out = append(out, headerValue(m, "Subject"))
		}
		return out
	}

	t.Run("shared capture", func(t *testing.T) {
		src, err := capture.OpenFile(filepath.Join(testdata, "pcap/zeek/smtp.pcap"))
		if err != nil {
			t.Fatal(err)
		}
		st, sessions := replay(t, src, Options{})
		if st.Sessions != 2 || st.Transactions != 2 || st.Accepted != 2 || st.Refused != 0 || st.Failed != 0 {
			t.Errorf("stats %+v, want 2 sessions, 2 transactions accepted", st)
		}
		// The recorded Exim offered AUTH; this Postfix does not: the
		// client's credentials are not sent, the mail goes through.
		var auth *Divergence
		for _, d := range sessions[0].Divergences {
			if strings.HasPrefix(d.Command, "AUTH") {
				auth = &d
			}
		}
		if auth == nil || auth.Command != "AUTH LOGIN" || !strings.HasPrefix(auth.Recorded, "334") ||
			!strings.HasPrefix(auth.Live, "5") || !strings.Contains(auth.Note, "2 recorded AUTH responses not sent") {
			t.Errorf("AUTH divergence: %+v (all: %+v)", auth, sessions[0].Divergences)
		}
		// One message, and one more with three recipients: four files.
		got := subjects(t, 4)
		for _, want := range []string{"SMTP", "Re: Bro SMTP CC Header"} {
			if !slices.Contains(got, want) {
				t.Errorf("no message with subject %q delivered: %q", want, got)
			}
		}
	})

	t.Run("pipelined, refused and TLS", func(t *testing.T) {
		gen := pcaptest.Write(t, pcaptest.Capture(4, 2, 7))
		tlsSess := pcaptest.Write(t, pcaptest.Scripted(netip.MustParseAddrPort("10.9.9.9:40000"), time.Unix(1736157600, 0), 0, [][2]string{
			{"EHLO tls.example.org\r\n", "250-mx.example.net\r\n250 STARTTLS\r\n"},
			{"STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n"},
			{"\x16\x03\x01\x00\x05hello", "\x16\x03\x03\x00\x05hello"},
		}))
		src := capture.Merge(memSource(t, gen), memSource(t, tlsSess))
		st, sessions := replay(t, src, Options{})
		if st.Sessions != 4 || st.Skipped["tls"] != 1 || st.Accepted != 3 || st.Refused != 1 || st.Failed != 0 {
			t.Errorf("stats %+v, want 4 sessions (3 accepted, 1 refused), 1 skipped for TLS", st)
		}
		// rcpt1's pipelined batch: the recorded server took RCPT and
		// DATA, this one refuses both, and the message is not sent.
		var refused *Session
		for _, rs := range sessions {
			if rs.Refused > 0 {
				refused = rs
			}
		}
		if refused == nil {
			t.Fatal("no session refused")
		}
		var cmds []string
		for _, d := range refused.Divergences {
			cmds = append(cmds, d.Command+" / "+d.Note)
		}
		if want := []string{"RCPT TO:<rcpt1@example.net> / ", "DATA / message not sent"}; !slices.Equal(cmds, want) {
			t.Errorf("divergences %q, want %q", cmds, want)
		}
		got := subjects(t, 3)
		for _, want := range []string{"generated message 0", "generated message 2", "generated message 3"} {
			if !slices.Contains(got, want) {
				t.Errorf("no message with subject %q delivered: %q", want, got)
			}
		}
		if slices.Contains(got, "generated message 1") {
			t.Errorf("the refused message was delivered")
		}
	})

	t.Run("BDAT", func(t *testing.T) {
		src, err := capture.OpenFile(filepath.Join(testdata, "pcap/zeek/rfc3030-bdat-multipart.pcap"))
		if err != nil {
			t.Fatal(err)
		}
		st, sessions := replay(t, src, Options{})
		if st.Sessions != 1 || st.Accepted != 1 || st.Divergences != 0 {
			t.Errorf("stats %+v, divergences %+v", st, sessions[0].Divergences)
		}
		if got := subjects(t, 1); !slices.Contains(got, "Zeek Logo") {
			t.Errorf("BDAT message not delivered: %q", got)
		}
	})

	t.Run("pace", func(t *testing.T) {
		// Thirty recorded seconds between commands, each wait cut to
		// 150ms: five waits, well under a second each.
		steps := [][2]string{
			{"EHLO paced.example.org\r\n", "250 mx.example.net\r\n"},
			{"MAIL FROM:<p@example.org>\r\n", "250 2.1.0 Ok\r\n"},
			{"RCPT TO:<paced@example.net>\r\n", "250 2.1.5 Ok\r\n"},
			{"DATA\r\n", "354 go ahead\r\n"},
			{"Subject: paced\r\n\r\nslowly\r\n.\r\n", "250 2.0.0 queued\r\n"},
			{"QUIT\r\n", "221 bye\r\n"},
		}
		pcap := pcaptest.Write(t, pcaptest.Scripted(netip.MustParseAddrPort("10.8.8.8:40001"), time.Unix(1736157600, 0), 30*time.Second, steps))
		start := time.Now()
		st, _ := replay(t, memSource(t, pcap), Options{Pace: true, MaxPause: 150 * time.Millisecond})
		el := time.Since(start)
		if st.Accepted != 1 {
			t.Errorf("stats %+v", st)
		}
		if el < 600*time.Millisecond || el > 10*time.Second {
			t.Errorf("paced replay took %v, want about 5 × 150ms", el)
		}
		if got := subjects(t, 1); !slices.Contains(got, "paced") {
			t.Errorf("paced message not delivered: %q", got)
		}
	})

	t.Run("no server", func(t *testing.T) {
		if _, err := Run(context.Background(), capture.Config{}, memSource(t, pcaptest.Write(t, pcaptest.Capture(1, 1, 1))), Options{}); err == nil {
			t.Error("Run without an address did not fail")
		}
	})
}

// testdata holds capture's third-party captures.
const testdata = "../../capture/testdata"

func memSource(t *testing.T, pcap []byte) capture.Source {
	t.Helper()
	src, err := capture.NewReader(bytes.NewReader(pcap), "mem.pcap", nil)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// headerValue returns the first value of a header field of a delivered
// message (LF line endings, as virtual(8) writes).
func headerValue(msg []byte, name string) string {
	for _, l := range strings.Split(string(msg), "\n") {
		if l == "" || l == "\r" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
