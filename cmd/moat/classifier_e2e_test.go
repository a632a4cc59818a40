package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/corpustest"
	"moat/internal/postfixtest"
)

// sendPlain sends one message without STARTTLS (moat's certificate is
// self-signed), as a plain SMTP client on port 25 does.
func sendPlain(addr, from, to string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// writeMessages writes msgs as .eml files into dir.
func writeMessages(t *testing.T, dir string, msgs []corpustest.Message) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%04d.eml", i)), m.Raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// README's classifier lines, for real, on the corpus's older half:
// moat learn (the embedded store opened directly), learning again (each
// message counted once), --forget, moat explain; then moat serve with
// the model, moat learn through the running moat's HTTP listener, mail
// judged live while dumpcap records it, and moat analyze --state on the
// capture giving every message the same classifier probability as the
// live log (live equals offline, given the same model).
func TestLearnExplainEndToEnd(t *testing.T) {
	msgs := corpustest.Load(t)
	train, test := corpustest.Folds(msgs, 5, 0)
	// A smaller training set keeps the test quick: the first 300 of
	// each class.
	var spam, ham []corpustest.Message
	for _, m := range train {
		switch {
		case m.Spam && len(spam) < 300:
			spam = append(spam, m)
		case !m.Spam && len(ham) < 300:
			ham = append(ham, m)
		}
	}
	dir := t.TempDir()
	writeMessages(t, filepath.Join(dir, "Junk"), spam)
	writeMessages(t, filepath.Join(dir, "cur"), ham)
	pf := postfixtest.Start(t, postfixtest.Options{})
	cfg := configFor(t, pf.Addr, fmt.Sprintf("state: {dir: %q}\nclassifier: {enabled: true, refresh: 1s}\n", filepath.Join(dir, "state")))

	code, out, errOut := runMoat(t, "learn", "--config", cfg, "--spam", filepath.Join(dir, "Junk"), "--ham", filepath.Join(dir, "cur"))
	if code != 0 || !strings.Contains(out, "spam: 300 learned") || !strings.Contains(out, "ham: 300 learned") ||
		!strings.Contains(out, "model: 300 spam, 300 ham learned") {
		t.Fatalf("moat learn: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runMoat(t, "learn", "--config", cfg, "--spam", filepath.Join(dir, "Junk"))
	if code != 0 || !strings.Contains(out, "spam: 300 already") || !strings.Contains(out, "model: 300 spam, 300 ham") {
		t.Fatalf("learning the same mail again counted it again:\n%s", out)
	}
	one := filepath.Join(dir, "Junk", "0000.eml")
	code, out, _ = runMoat(t, "learn", "--config", cfg, "--forget", one)
	if code != 0 || !strings.Contains(out, "forget: 1 forgotten") || !strings.Contains(out, "model: 299 spam, 300 ham") {
		t.Fatalf("moat learn --forget:\n%s", out)
	}
	runMoat(t, "learn", "--config", cfg, "--spam", one)

	// explain: a held-back spam and a held-back ham.
	var tspam, tham corpustest.Message
	for _, m := range test {
		if m.Spam && tspam.Raw == nil {
			tspam = m
		}
		if !m.Spam && tham.Raw == nil {
			tham = m
		}
	}
	writeMessages(t, filepath.Join(dir, "explain-spam"), []corpustest.Message{tspam})
	code, out, errOut = runMoat(t, "explain", "--config", cfg, filepath.Join(dir, "explain-spam", "0000.eml"))
	if code != 0 || !strings.Contains(out, "classifier: spam probability") || !strings.Contains(out, "towards spam:") ||
		!strings.Contains(out, "CLASSIFIER_SPAM") {
		t.Fatalf("moat explain of a spam: exit %d\n%s%s", code, out, errOut)
	}

	// moat serve with the model; learning goes through it now.
	m := startMoat(t, "--config", cfg)
	_, port := hostPort(t, m.smtp)
	capDir := t.TempDir()
	cap := startDumpcap(t, capDir, port)
	// All 300 ham again, through the running moat (its answer is larger
	// than an HTTP/1 server's first flush), and one new message.
	writeMessages(t, filepath.Join(dir, "more"), test[:1])
	code, out, errOut = runMoat(t, "learn", "--config", cfg, "--http", m.http, "--ham", filepath.Join(dir, "cur"), filepath.Join(dir, "more"))
	if code != 0 || !strings.Contains(out, "ham: 1 learned, 300 already") || !strings.Contains(out, "model: 300 spam, 301 ham") {
		t.Fatalf("moat learn through the running moat: exit %d\n%s%s", code, out, errOut)
	}

	// Send held-back messages through moat.
	sent := 0
	for i, msg := range test {
		if i%13 != 0 || sent >= 30 {
			continue
		}
		from := fmt.Sprintf("sender%d@client.test", i)
		if err := sendPlain(m.smtp, from, "you@"+postfixtest.Domain, msg.Raw); err != nil {
			// A refused message is judged too; only a broken session fails.
			if !strings.Contains(err.Error(), "550") && !strings.Contains(err.Error(), "5.7.1") {
				t.Fatalf("sending %s: %v", msg.Name, err)
			}
		}
		sent++
	}
	live := map[string]float64{}
	deadline := time.Now().Add(20 * time.Second)
	for len(live) < sent && time.Now().Before(deadline) {
		for _, line := range strings.Split(m.log.String(), "\n") {
			var e struct {
				Msg        string `json:"msg"`
				MailFrom   string `json:"mail_from"`
				Classifier *struct {
					Prob float64 `json:"prob"`
				} `json:"classifier"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "transaction" && e.Classifier != nil {
				live[e.MailFrom] = e.Classifier.Prob
			}
		}
		time.Sleep(50 * time.Millisecond) // polling moat's log for the transaction lines
	}
	if len(live) != sent {
		t.Fatalf("%d of %d transactions carry a classifier judgement in the log:\n%s", len(live), sent, m.log.String())
	}
	cap.sync(t)
	cap.stop(t)

	code, out, errOut = runMoat(t, "analyze", "--config", cfg, "--state", filepath.Join(dir, "state"), "--dns", "off", "--quiet", cap.file)
	if code != 0 {
		t.Fatalf("moat analyze: exit %d\n%s", code, errOut)
	}
	matched := 0
	for _, line := range strings.Split(out, "\n") {
		var r struct {
			MailFrom   string `json:"mailfrom"`
			Classifier *struct {
				Prob float64 `json:"prob"`
			} `json:"classifier"`
		}
		if json.Unmarshal([]byte(line), &r) != nil || r.MailFrom == "" {
			continue
		}
		want, ok := live[r.MailFrom]
		if !ok {
			continue
		}
		if r.Classifier == nil || math.Abs(r.Classifier.Prob-want) > 1e-12 {
			t.Errorf("%s: live classifier %v, offline %+v", r.MailFrom, want, r.Classifier)
		}
		matched++
	}
	if matched != sent {
		t.Fatalf("offline records matched %d of %d live transactions:\n%s", matched, sent, out)
	}
}

// Autolearn through the moat binary: with classifier.autolearn on (flush
// every second), messages a rule scores far above autolearn's spam score
// are learned as spam by themselves, and ordinary ones as ham; the
// model in force counts them (moat_classifier_model_messages).
func TestAutolearnEndToEnd(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	// Scores without a reject: the message is learned, and delivered.
	os.WriteFile(rulesPath, []byte("thresholds: {tag: 50, reject: 100}\nrules:\n  - {name: SURE_SPAM, stage: data, when: {subject: {contains: \"lottery\"}}, score: 20}\n"), 0o644)
	cfg := configFor(t, pf.Addr, fmt.Sprintf("rules: {file: %q}\nstate: {dir: %q}\nclassifier:\n  enabled: true\n  refresh: 1s\n  autolearn: {enabled: true, flush: 1s}\n",
		rulesPath, filepath.Join(dir, "state")))
	m := startMoat(t, "--config", cfg)
	for i := range 3 {
		msg := fmt.Sprintf("From: a%d@client.test\r\nSubject: you won the lottery %d\r\nMessage-ID: <l%d@client.test>\r\n\r\nclaim your prize %d\r\n", i, i, i, i)
		if err := sendPlain(m.smtp, fmt.Sprintf("a%d@client.test", i), "you@"+postfixtest.Domain, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	msg := "From: b@client.test\r\nSubject: minutes of the meeting\r\nMessage-ID: <m1@client.test>\r\n\r\nsee attached\r\n"
	if err := sendPlain(m.smtp, "b@client.test", "you@"+postfixtest.Domain, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		spam := scrapeSum(t, m.http, `moat_classifier_model_messages{class="spam"}`)
		ham := scrapeSum(t, m.http, `moat_classifier_model_messages{class="ham"}`)
		if spam == 3 && ham == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("model after autolearn: %v spam, %v ham; want 3 and 1\n%s", spam, ham, m.log.String())
		}
		time.Sleep(100 * time.Millisecond) // polling the model in force (flushed every second)
	}
	if !strings.Contains(m.log.String(), `"msg":"classifier autolearn"`) {
		t.Error("no autolearn line in the log")
	}
}
