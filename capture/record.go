package capture

import (
	"encoding/json"
	"strconv"
	"time"

	"moat/inspect"
	"moat/inspect/auth"
)

// Record is one line of moat's offline report: one mail transaction, or
// one session that never got to a transaction (only EHLO and QUIT,
// STARTTLS before MAIL, refused at connect), as Zeek's smtp.log has it.
//
// The fields up to TLS carry the names and meaning of Zeek's smtp.log
// (base/protocols/smtp/main.zeek): header values are the raw, unfolded
// field bodies; mailfrom and rcptto are the envelope addresses without
// angle brackets, every RCPT the client sent whatever the server replied;
// last_reply is the last reply the server sent in the transaction. The
// rest is moat's: what inspect.Engine decided, fed stage by stage exactly
// as the proxy feeds it.
type Record struct {
	TS             Epoch    `json:"ts"`
	UID            string   `json:"uid"`
	OrigH          string   `json:"id.orig_h"`
	OrigP          uint16   `json:"id.orig_p"`
	RespH          string   `json:"id.resp_h"`
	RespP          uint16   `json:"id.resp_p"`
	TransDepth     int      `json:"trans_depth"`
	Helo           string   `json:"helo,omitempty"`
	MailFrom       string   `json:"mailfrom,omitempty"`
	RcptTo         []string `json:"rcptto,omitempty"`
	Date           string   `json:"date,omitempty"`
	From           string   `json:"from,omitempty"`
	To             []string `json:"to,omitempty"`
	Cc             []string `json:"cc,omitempty"`
	ReplyTo        string   `json:"reply_to,omitempty"`
	MsgID          string   `json:"msg_id,omitempty"`
	InReplyTo      string   `json:"in_reply_to,omitempty"`
	Subject        string   `json:"subject,omitempty"`
	XOriginatingIP string   `json:"x_originating_ip,omitempty"`
	FirstReceived  string   `json:"first_received,omitempty"`
	SecondReceived string   `json:"second_received,omitempty"`
	LastReply      string   `json:"last_reply,omitempty"`
	Path           []string `json:"path,omitempty"`
	UserAgent      string   `json:"user_agent,omitempty"`
	TLS            bool     `json:"tls"`

	// Verdict is the action moat would have taken on this transaction:
	// accept, tag, tempfail or reject; "" when no stage was judged (no
	// engine, or a session that never greeted).
	Verdict string `json:"verdict,omitempty"`
	// WouldBe is the action without monitor mode or shadow rules, when it
	// differs from Verdict.
	WouldBe string `json:"would_be,omitempty"`
	// Score and Rules are the total score and the matched rules at the
	// last stage judged.
	Score float64  `json:"score"`
	Rules []string `json:"rules,omitempty"`
	// Stage is where moat would have acted: the stage whose verdict
	// refused the transaction, else the last stage judged.
	Stage string `json:"stage,omitempty"`
	// Reason is the refusing verdict's reason constant, or a protocol
	// reason when the proxy itself would have refused the command
	// (mail_syntax, rcpt_syntax, bad_sequence).
	Reason string `json:"reason,omitempty"`
	// Greylist is the greylisting decision when a rule asked for it
	// (action greylist): offline there is no store to remember a first
	// attempt, so it is "unknown" and the mail is judged as the other
	// rules make it.
	Greylist string `json:"greylist,omitempty"`
	// Smuggling flags a DATA body whose end a lenient parser would have
	// seen earlier than the strict one; EOD says where each saw it.
	Smuggling bool `json:"smuggling"`
	EOD       *EOD `json:"eod,omitempty"`

	// The sender authentication of the message (moat's Authentication-
	// Results in brief), when the data stage ran with it configured.
	*auth.Summary
	// Classifier is the statistical classifier's judgement of the
	// message, when a trained model was at hand (moat analyze --state):
	// the same key as moat serve's transaction line.
	Classifier *inspect.ClassifierResult `json:"classifier,omitempty"`

	// Moat's view of the session and the message.
	Size          int64    `json:"size,omitempty"`
	BareLF        bool     `json:"bare_lf,omitempty"`
	BareCR        bool     `json:"bare_cr,omitempty"`
	AuthMech      string   `json:"auth_mech,omitempty"`
	AuthUser      string   `json:"auth_user,omitempty"`
	Authenticated bool     `json:"authenticated,omitempty"`
	Problems      []string `json:"problems,omitempty"`

	// File is where --extract wrote the message, if it did.
	File string `json:"extracted,omitempty"`
}

// EOD gives where, in the raw bytes after the DATA command, each parser
// saw the end of the data: the offset of the terminating line's dot, -1
// for never. Strict is RFC 5321's CR LF "." CR LF, which moat and its
// DataReader use; LF is a parser that takes LF as the line end, CR
// optional (as Zeek, Suricata and Postfix before smtpd_forbid_bare_newline
// do); CR one that also takes a bare CR as a line end.
type EOD struct {
	Strict int64 `json:"strict"`
	LF     int64 `json:"lf"`
	CR     int64 `json:"cr"`
}

// Epoch is a time written as Zeek writes ts in JSON: seconds since the
// epoch with microseconds.
type Epoch time.Time

// MarshalJSON writes seconds since the epoch with six decimals.
func (e Epoch) MarshalJSON() ([]byte, error) {
	t := time.Time(e)
	if t.IsZero() {
		return []byte("0"), nil
	}
	us := t.UnixMicro()
	b := strconv.AppendInt(nil, us/1e6, 10)
	b = append(b, '.')
	frac := strconv.AppendInt(nil, us%1e6+1e6, 10)
	return append(b, frac[1:]...), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Epoch) UnmarshalJSON(b []byte) error {
	var f json.Number
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	s := string(f)
	sec, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			sec, frac = s[:i], s[i+1:]
			break
		}
	}
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return err
	}
	for len(frac) < 9 {
		frac += "0"
	}
	ns, err := strconv.ParseInt(frac[:9], 10, 64)
	if err != nil {
		return err
	}
	if n == 0 && ns == 0 {
		*e = Epoch(time.Time{})
		return nil
	}
	*e = Epoch(time.Unix(n, ns).UTC())
	return nil
}

// Time returns e as a time.Time.
func (e Epoch) Time() time.Time { return time.Time(e) }
