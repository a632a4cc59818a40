package rules

import (
	"moat/inspect"
)

func init() {
	for name, fc := range submissionFacts {
		facts[name] = fc
	}
}

// submissionFacts are about the client's own users: submission
// listeners and SMTP AUTH (RFC 4954). AUTH comes after EHLO, so whether
// a session authenticated is known from the mail stage on.
var submissionFacts = map[string]fact{
	"submission": {stage: inspect.StageConnect, kind: kBool,
		doc:  "the session came in on a submission listener (listen_submission, listen_submission_tls)",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Session.Submission) }},
	"authenticated": {stage: inspect.StageMail, kind: kBool,
		doc:  "the client authenticated with SMTP AUTH (the upstream said 235)",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Session.AuthUser != "") }},
	"auth_user": {stage: inspect.StageMail, kind: kString,
		doc:  "the user name the client authenticated as, \"\" when it did not",
		strs: func(f *inspect.Facts) ([]string, error) { return one(f.Session.AuthUser) }},
	"mail_from_owned": {stage: inspect.StageMail, kind: kBool,
		doc: "the envelope sender belongs to the authenticated user (submission.senders); unknown when not authenticated or no map is configured",
		flag: func(f *inspect.Facts) (bool, error) {
			if f.Tx.From.IsNull() {
				// A bounce from an authenticated user: no address to own.
				return f.SenderOwned("")
			}
			return f.SenderOwned(f.Tx.From.String())
		}},
	"from_owned": {stage: inspect.StageData, kind: kBool, depth: inspect.DepthHeaders,
		doc: "every address of the From: header belongs to the authenticated user (submission.senders); unknown when not authenticated or no map is configured",
		flag: func(f *inspect.Facts) (bool, error) {
			if f.Content == nil || len(f.Content.From) == 0 {
				return f.SenderOwned("")
			}
			for _, a := range f.Content.From {
				ok, err := f.SenderOwned(a.Addr)
				if err != nil || !ok {
					return ok, err
				}
			}
			return true, nil
		}},
}
