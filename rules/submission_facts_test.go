package rules

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"moat/inspect"
	"moat/inspect/smtp"
)

// The built-in rules with a submission.senders map: an authenticated
// user sending as an address it does not own is refused at MAIL
// (SENDER_NOT_OWNED, 553) and for a From: it does not own at DATA
// (FROM_NOT_OWNED, 550); its own addresses pass; an unauthenticated
// session is not asked (the facts are unknown), nor is any session
// without a map.
func TestSenderOwnership(t *testing.T) {
	set, err := Default(Options{})
	if err != nil {
		t.Fatal(err)
	}
	senders := map[string][]string{"alice": {"alice@example.net"}, "bob": {"@example.org"}}
	for _, tt := range []struct {
		name, user, from, header string
		senders                  map[string][]string
		want                     string // the rule that refuses, "" for none
	}{
		{"own address", "alice", "alice@example.net", "alice@example.net", senders, ""},
		{"own address, other case", "alice", "Alice@Example.NET", "alice@example.net", senders, ""},
		{"whole domain", "bob", "anyone@example.org", "x@example.org", senders, ""},
		{"foreign envelope", "alice", "ceo@example.net", "alice@example.net", senders, "SENDER_NOT_OWNED"},
		{"foreign From:", "alice", "alice@example.net", "ceo@example.net", senders, "FROM_NOT_OWNED"},
		{"user not listed", "carol", "carol@example.net", "carol@example.net", senders, "SENDER_NOT_OWNED"},
		{"not authenticated", "", "ceo@example.net", "ceo@example.net", senders, ""},
		{"no map", "alice", "ceo@example.net", "ceo@example.net", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, err := inspect.New(inspect.Config{Judge: set, Submission: inspect.SubmissionConfig{Senders: tt.senders}})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			s := &inspect.Session{ID: "S", Client: netip.MustParseAddrPort("192.0.2.1:1"), HeloVerb: "EHLO",
				Helo: "laptop.example.net", Submission: true, AuthUser: tt.user}
			from, _, err := smtp.ParseMailArg("FROM:<" + tt.from + ">")
			if err != nil {
				t.Fatal(err)
			}
			tx := &inspect.Transaction{From: from}
			got := ""
			v := e.Mail(ctx, s, tx)
			if v.Action == inspect.Reject {
				got = v.Rules[0]
				if v.Reply.Code != 553 {
					t.Errorf("MAIL refused with %v, want 553", v.Reply)
				}
			} else {
				to, _, _ := smtp.ParseRcptArg("TO:<dave@example.com>")
				tx.Rcpts = []inspect.Recipient{{Path: to}}
				c := &inspect.Content{From: []inspect.Address{{Addr: tt.header, Domain: "x"}}}
				v = e.DataWithContent(ctx, s, tx, &inspect.Message{}, c)
				if v.Action == inspect.Reject && slices.Contains(v.Rules, "FROM_NOT_OWNED") {
					got = "FROM_NOT_OWNED"
				}
			}
			if got != tt.want {
				t.Errorf("refused by %q, want %q (verdict %+v)", got, tt.want, v)
			}
		})
	}
}
