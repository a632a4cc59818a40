package rules

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"moat/inspect"
	"moat/inspect/classifier"
)

// wordMessage is a 5 KB message of words drawn from vocab, with a
// subject, a sender and a link, as the classifier sees mail.
func wordMessage(r *rand.Rand, vocab []string, i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender %d <s%d@example%d.com>\r\nTo: you@example.net\r\nSubject: %s %s %s\r\nMessage-ID: <%d@example.com>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
		i%50, i, i%7, vocab[r.IntN(len(vocab))], vocab[r.IntN(len(vocab))], vocab[r.IntN(len(vocab))], i)
	for b.Len() < 5<<10 {
		for range 12 {
			b.WriteString(vocab[r.IntN(len(vocab))])
			b.WriteByte(' ')
		}
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "http://link%d.example.org/x\r\n", i%30)
	return []byte(b.String())
}

// BenchmarkClassifier is what the classifier adds to judging a 5 KB
// message with the built-in rules: "off" is the rules without a
// classifier (the message parsed to its headers and MIME structure),
// "on" adds the decoded text and the classifier's judgement with a model
// trained on 2,000 messages. The difference is the classifier's cost
// (the budget: 0.2 ms of CPU per message).
func BenchmarkClassifier(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	vocab := make([]string, 8000)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("w%x%c", r.Uint32()%100000, 'a'+rune(i%26))
	}
	m := classifier.NewModel(classifier.DefaultBits)
	for i := range 2000 {
		msg := wordMessage(r, vocab, i)
		c := inspect.ParseContent(strings.NewReader(string(msg)), int64(len(msg)), inspect.DepthText, inspect.DefaultContentLimits())
		m.Learn(inspect.ClassifierDoc(c), i%2 == 0, false)
	}
	live := &classifier.Live{}
	live.Set(m, "")
	msgs := make([][]byte, 64)
	for i := range msgs {
		msgs[i] = wordMessage(r, vocab, 5000+i)
	}
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			set, err := Default(Options{Classifier: on})
			if err != nil {
				b.Fatal(err)
			}
			ec := inspect.Config{}
			if on {
				ec.Classifier = live
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(msgs[0])))
			for i := 0; b.Loop(); i++ {
				j := set.JudgeMessageWith(ec, "m", msgs[i%len(msgs)])
				if on && j.Classifier == nil {
					b.Fatal("no classifier judgement")
				}
			}
		})
	}
}
