package inspect

import (
	"strings"

	"moat/inspect/classifier"
)

// errNoClassifier: no model is configured (no classifier section, no
// state store, or offline without --state): the classifier facts are
// unknown.
const errNoClassifier = constError("no classifier model (classifier.enabled and a state store)")

// errUntrained: the model learned fewer than classifier.MinLearned
// messages of a class; it does not guess.
const errUntrained = constError("the classifier has not learned 200 spam and 200 ham messages yet")

// ClassifierResult is the classifier's judgement of a message, for the
// log and the records.
type ClassifierResult struct {
	Prob       float64 `json:"prob"`
	Confidence float64 `json:"confidence"`
}

// Classifier returns the classifier's judgement of the message (data
// stage). It is computed once per message, from the content the rules
// parsed (DepthText). No model, or one not trained enough, makes it
// unknown — an error, never a guess.
func (f *Facts) Classifier() (classifier.Result, error) {
	if f.classified != nil {
		return f.classified.r, f.classified.err
	}
	c := &classified{}
	f.classified = c
	var m *classifier.Model
	if f.engine != nil {
		m = f.engine.classifier.Model()
	}
	switch {
	case m == nil:
		c.err = errNoClassifier
	case f.Content == nil:
		c.err = errNoClassifier
	default:
		r, ok := m.Classify(f.classifierDoc())
		if !ok {
			c.err = errUntrained
		} else {
			c.r = r
		}
	}
	return c.r, c.err
}

// classifierDoc is the message as the classifier reads it, made once
// per message: for the judgement and for autolearn.
func (f *Facts) classifierDoc() *classifier.Doc {
	if f.doc == nil {
		f.doc = ClassifierDoc(f.Content)
	}
	return f.doc
}

// classified caches a message's classification in its Facts.
type classified struct {
	r   classifier.Result
	err error
}

// ClassifierDoc is the message as the classifier reads it, from content
// parsed to DepthText: decoded headers, the visible text, link hosts and
// MIME parts. The same function serves the live engine, moat analyze,
// moat learn and moat explain, so all tokenize alike.
func ClassifierDoc(c *Content) *classifier.Doc {
	d := &classifier.Doc{Subject: c.Subject, URLHosts: make([]string, 0, len(c.URLs))}
	d.Headers = make([]classifier.Header, len(c.Header))
	for i, h := range c.Header {
		d.Headers[i] = classifier.Header{Name: h.Name, Value: h.Decoded}
	}
	switch {
	case c.Text != "" && c.HTMLText != "":
		d.Text = c.Text + "\n" + c.HTMLText
	case c.Text != "":
		d.Text = c.Text
	default:
		d.Text = c.HTMLText
		d.HTMLOnly = c.HTML != ""
	}
	for _, u := range c.URLs {
		if u.Host != "" {
			d.URLHosts = append(d.URLHosts, u.Host)
		}
	}
	for _, p := range c.Parts {
		if p.Multipart {
			continue
		}
		d.Parts = append(d.Parts, classifier.Part{Type: strings.ToLower(p.ContentType), Filename: p.Filename})
	}
	return d
}
