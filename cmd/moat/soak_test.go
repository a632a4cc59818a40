package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// The shapes of session the soak test sends. Each names what the client
// does and which reply class it must see at every step.
var soakShapes = []string{
	"plain", "pipelined", "starttls", "rset_two_tx",
	"mail_reject", "mail_defer", "rcpt_reject", "rcpt_defer",
	"data_reject", "data_defer", "eod_reject", "abort_in_data",
	"no_upstream",
}

// refusingUpstream is a real Postfix that refuses at every stage it can,
// chosen by the envelope: MAIL (smtpd_delay_reject = no, so the sender
// restrictions answer MAIL itself), RCPT, DATA (smtpd_data_restrictions)
// and the end of data (header_checks), in 4xx and 5xx.
func refusingUpstream(t *testing.T) *postfixtest.Postfix {
	return postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		"smtpd_delay_reject = no",
		"smtpd_sender_restrictions = check_sender_access inline:{mail-reject@client.test=REJECT, mail-defer@client.test=DEFER}, permit",
		"smtpd_recipient_restrictions = check_recipient_access inline:{rcpt-reject@example.net=REJECT, rcpt-defer@example.net=DEFER}, permit_mynetworks, reject_unauth_destination",
		"smtpd_data_restrictions = check_sender_access inline:{data-reject@client.test=REJECT, data-defer@client.test=DEFER}, permit",
		"header_checks = regexp:{{/^Subject: eod-reject/ REJECT refused at end of data}}",
	}})
}

// soakClient is one SMTP session of the soak test.
type soakClient struct {
	t    *testing.T
	nc   net.Conn
	tp   *textproto.Conn
	seed uint64
	n    int // session number
	log  []string
	// acked are the Message-IDs of the messages moat answered 250.
	acked []string
}

func (c *soakClient) fail(format string, args ...any) error {
	return fmt.Errorf("session %d (seed %d): %s; transcript:\n%s", c.n, c.seed, fmt.Sprintf(format, args...), strings.Join(c.log, "\n"))
}

// expect reads one reply and checks its class (2, 3, 4 or 5).
func (c *soakClient) expect(class int) error {
	code, msg, err := c.tp.ReadResponse(0)
	c.log = append(c.log, fmt.Sprintf("<- %d %s", code, msg))
	if err != nil && code == 0 {
		return c.fail("no reply (want %dxx): %v", class, err)
	}
	if code/100 != class {
		return c.fail("reply %d %q, want %dxx", code, msg, class)
	}
	return nil
}

func (c *soakClient) send(lines ...string) error {
	c.nc.SetDeadline(time.Now().Add(20 * time.Second))
	for _, l := range lines {
		c.log = append(c.log, "-> "+l)
	}
	_, err := c.tp.W.WriteString(strings.Join(lines, "\r\n") + "\r\n")
	if err == nil {
		err = c.tp.W.Flush()
	}
	if err != nil {
		return c.fail("write: %v", err)
	}
	return nil
}

// cmd sends one command and checks its reply's class.
func (c *soakClient) cmd(class int, line string) error {
	if err := c.send(line); err != nil {
		return err
	}
	return c.expect(class)
}

// steps is a script of commands with the reply class each must get.
func (c *soakClient) steps(s ...any) error {
	for i := 0; i < len(s); i += 2 {
		if err := c.cmd(s[i].(int), s[i+1].(string)); err != nil {
			return err
		}
	}
	return nil
}

// message sends a message body after a 354 and checks the final reply.
func (c *soakClient) message(class int, subject string) error {
	id := fmt.Sprintf("<%d.%d.%s@client.test>", c.seed, c.n, subject)
	body := fmt.Sprintf("From: a@client.test\r\nTo: b@example.net\r\nSubject: %s\r\nMessage-ID: %s\r\n\r\nsession %d\r\n..line with a dot\r\n.", subject, id, c.n)
	if err := c.cmd(class, body); err != nil {
		return err
	}
	if class == 2 {
		c.acked = append(c.acked, id)
	}
	return nil
}

// TestServeDefaultSurvivesEveryShape runs moat serve on the built-in
// default (addresses given as flags) and sends it 1,000 sessions of every
// shape: plain and pipelined, STARTTLS, RSET between transactions, an
// upstream refusing at MAIL, RCPT, DATA and end of data with 4xx and 5xx,
// a client vanishing inside DATA, and no upstream at all. Every session
// must get every answer it is owed, in the right class; the processes must
// still run; and the upstream must hold exactly the messages moat
// acknowledged with 250 — never one more, never one fewer.
func TestServeDefaultSurvivesEveryShape(t *testing.T) {
	pf := refusingUpstream(t)
	live := startMoat(t, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--upstream", pf.Addr)
	// An upstream address nobody listens on: a port just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	orphan := startMoat(t, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--upstream", dead)

	const sessions, workers = 1000, 12
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MOAT_SOAK_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d", seed)
	var (
		mu       sync.Mutex
		acked    []string // Message-IDs moat answered 250 after DATA
		failures []string
		perShape = map[string]int{}
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				r := rand.New(rand.NewPCG(seed, uint64(n)))
				shape := soakShapes[r.IntN(len(soakShapes))]
				addr := live.smtp
				if shape == "no_upstream" {
					addr = orphan.smtp
				}
				ids, err := soakSession(t, addr, shape, seed, n)
				mu.Lock()
				perShape[shape]++
				if err != nil && len(failures) < 10 {
					failures = append(failures, shape+": "+err.Error())
				}
				acked = append(acked, ids...)
				mu.Unlock()
			}
		}()
	}
	deadline := time.After(5 * time.Minute)
feed:
	for n := 0; n < sessions; n++ {
		select {
		case jobs <- n:
		case <-deadline:
			t.Errorf("sessions not done within 5 minutes (seed %d)", seed)
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	t.Logf("shapes: %v", perShape)
	for _, f := range failures {
		t.Error(f)
	}
	for _, m := range []*moatProc{live, orphan} {
		select {
		case <-m.exited:
			t.Fatalf("moat exited during the soak: %v", m.cmd.ProcessState)
		default:
		}
		resp, err := http.Get("http://" + m.http + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/healthz after the soak: %v %v", resp, err)
		}
		resp.Body.Close()
		if strings.Contains(m.log.String(), "panic") {
			t.Errorf("moat logged a panic:\n%s", m.log.String())
		}
	}
	want := len(acked)
	pf.WaitMessages(t, want, 60*time.Second)
	// Every acknowledged message arrived. Nothing may have arrived that
	// moat did not acknowledge (a refused or cut-short message), and
	// nothing twice.
	got := map[string]int{}
	for _, m := range pf.Messages(t) {
		got[soakMessageID(m)]++
	}
	wantCopies := map[string]int{}
	for _, id := range acked {
		wantCopies[id]++ // one copy per accepted recipient
	}
	for id, k := range wantCopies {
		if got[id] != k {
			t.Errorf("acknowledged message %s arrived %d times, want %d (seed %d)", id, got[id], k, seed)
		}
		delete(got, id)
	}
	for id, k := range got {
		t.Errorf("message %s arrived %d times, but moat never acknowledged it (seed %d)", id, k, seed)
	}
	t.Logf("%d messages acknowledged and delivered exactly once", want)
}

// soakMessageID is the Message-ID header of a delivered message.
func soakMessageID(msg []byte) string {
	for _, l := range strings.Split(string(msg), "\n") {
		if strings.HasPrefix(strings.ToLower(l), "message-id: ") {
			return strings.TrimSpace(l[len("message-id: "):])
		}
		if l == "" {
			break
		}
	}
	return ""
}

// soakSession runs one session of shape against addr. It returns the
// Message-IDs of the messages moat acknowledged with 250 after DATA.
func soakSession(t *testing.T, addr, shape string, seed uint64, n int) ([]string, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("session %d: dial: %v", n, err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &soakClient{t: t, nc: nc, tp: textproto.NewConn(nc), seed: seed, n: n}
	if err := c.expect(2); err != nil {
		return nil, err
	}
	helo := fmt.Sprintf("EHLO client%d.client.test", n)
	if err := c.cmd(2, helo); err != nil {
		return nil, err
	}
	tx := func(from, to string, rcptClass, dataClass, eodClass int, subject string) error {
		if err := c.steps(2, "MAIL FROM:<"+from+">"); err != nil {
			return err
		}
		if err := c.cmd(rcptClass, "RCPT TO:<"+to+">"); err != nil {
			return err
		}
		if rcptClass != 2 {
			return nil
		}
		if err := c.cmd(dataClass, "DATA"); err != nil || dataClass != 3 {
			return err
		}
		if err := c.message(eodClass, subject); err != nil {
			return err
		}
		return nil
	}
	switch shape {
	case "plain":
		err = tx("a@client.test", "b@example.net", 2, 3, 2, "plain")
	case "pipelined":
		// RFC 2920: the whole envelope in one write, replies in order.
		if err = c.send("MAIL FROM:<a@client.test>", "RCPT TO:<b@example.net>", "RCPT TO:<c@example.net>", "DATA"); err == nil {
			for _, cl := range []int{2, 2, 2, 3} {
				if err = c.expect(cl); err != nil {
					break
				}
			}
		}
		if err == nil {
			if err = c.message(2, "pipelined"); err == nil {
				// Two recipients: virtual(8) delivers one copy each.
				c.acked = append(c.acked, c.acked[len(c.acked)-1])
			}
		}
	case "starttls":
		if err = c.cmd(2, "STARTTLS"); err != nil {
			break
		}
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, ServerName: "moat.test"})
		if err = tc.Handshake(); err != nil {
			err = c.fail("TLS handshake: %v", err)
			break
		}
		c.nc, c.tp = tc, textproto.NewConn(tc)
		if err = c.cmd(2, helo); err == nil { // RFC 3207 §4.2: EHLO again
			err = tx("a@client.test", "b@example.net", 2, 3, 2, "starttls")
		}
	case "rset_two_tx":
		if err = tx("a@client.test", "b@example.net", 2, 3, 2, "first"); err == nil {
			if err = c.cmd(2, "RSET"); err == nil {
				if err = c.cmd(2, helo); err == nil {
					err = tx("a@client.test", "b@example.net", 2, 3, 2, "second")
				}
			}
		}
	case "mail_reject", "mail_defer":
		class := map[string]int{"mail_reject": 5, "mail_defer": 4}[shape]
		if err = c.cmd(class, "MAIL FROM:<"+strings.ReplaceAll(shape, "_", "-")+"@client.test>"); err == nil {
			// The session goes on: RSET, then a good transaction.
			if err = c.cmd(2, "RSET"); err == nil {
				err = tx("a@client.test", "b@example.net", 2, 3, 2, "after-"+shape)
			}
		}
	case "rcpt_reject", "rcpt_defer":
		class := map[string]int{"rcpt_reject": 5, "rcpt_defer": 4}[shape]
		if err = c.steps(2, "MAIL FROM:<a@client.test>", class, "RCPT TO:<"+strings.ReplaceAll(shape, "_", "-")+"@example.net>",
			2, "RCPT TO:<b@example.net>", 3, "DATA"); err == nil {
			err = c.message(2, shape)
		}
	case "data_reject", "data_defer":
		class := map[string]int{"data_reject": 5, "data_defer": 4}[shape]
		// moat answers DATA with 354 itself and sends the message on
		// once it has judged it, so the upstream's refusal of DATA
		// comes back as the reply to the end of data.
		if err = tx(strings.ReplaceAll(shape, "_", "-")+"@client.test", "b@example.net", 2, 3, class, shape); err == nil {
			// The refused DATA must not poison the session.
			if err = c.cmd(2, "RSET"); err == nil {
				err = tx("a@client.test", "b@example.net", 2, 3, 2, "after-"+shape)
			}
		}
	case "eod_reject":
		if err = tx("a@client.test", "b@example.net", 2, 3, 5, "eod-reject"); err == nil {
			err = tx("a@client.test", "b@example.net", 2, 3, 2, "after-eod-reject")
		}
	case "abort_in_data":
		if err = c.steps(2, "MAIL FROM:<a@client.test>", 2, "RCPT TO:<b@example.net>", 3, "DATA"); err == nil {
			c.send("Subject: cut short\r\n\r\nhalf a messa")
			return c.acked, nil // hang up mid-message: nothing may be delivered
		}
	case "no_upstream":
		// moat answers MAIL itself; the first command that needs the
		// upstream gets a 4xx, never a 250.
		if err = c.send("MAIL FROM:<a@client.test>"); err == nil {
			code, msg, _ := c.tp.ReadResponse(0)
			c.log = append(c.log, fmt.Sprintf("<- %d %s", code, msg))
			switch code / 100 {
			case 4:
			case 2:
				err = c.cmd(4, "RCPT TO:<b@example.net>")
			default:
				err = c.fail("MAIL with no upstream: %d %s", code, msg)
			}
		}
	}
	if err != nil {
		return c.acked, err
	}
	if err := c.cmd(2, "QUIT"); err != nil {
		return c.acked, err
	}
	_, _ = bufio.NewReader(c.nc).ReadByte() // the server closes
	return c.acked, nil
}
