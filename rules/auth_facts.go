package rules

import (
	"strings"

	"gopkg.in/yaml.v3"

	"moat/inspect"
	"moat/inspect/auth"
)

// errAuthUnknown: the sender-authentication facts are not known (not
// configured, or offline without the DNS answers they need). A condition
// over them is unknown, never false: an unrecorded answer is no failure.
const errAuthUnknown = constErr("sender authentication result unknown")

type constErr string

func (e constErr) Error() string { return string(e) }

// authResult returns r as a fact value, or an error when it is unknown.
func authResult(r auth.Result) ([]string, error) {
	if r == "" || r == auth.Unknown {
		return nil, errAuthUnknown
	}
	return []string{string(r)}, nil
}

// dataAuth returns the message's sender authentication, at data.
func dataAuth(f *inspect.Facts) (*auth.Results, error) {
	if f.Auth == nil {
		return nil, errAuthUnknown
	}
	return f.Auth, nil
}

// dataResult is a fact whose value is one result of the message's
// sender authentication.
func dataResult(get func(*auth.Results) auth.Result) func(*inspect.Facts) ([]string, error) {
	return func(f *inspect.Facts) ([]string, error) {
		a, err := dataAuth(f)
		if err != nil {
			return nil, err
		}
		return authResult(get(a))
	}
}

// dmarcFact is a fact derived from the DMARC result, unknown with it.
func dmarcFact(get func(*inspect.Facts, *auth.Results) string) func(*inspect.Facts) ([]string, error) {
	return func(f *inspect.Facts) ([]string, error) {
		a, err := dataAuth(f)
		if err != nil {
			return nil, err
		}
		if a.DMARC.Result == auth.Unknown {
			return nil, errAuthUnknown
		}
		return one(get(f, a))
	}
}

func init() {
	for name, fc := range authFacts {
		facts[name] = fc
	}
}

// authFacts are the sender-authentication facts (inspect/auth).
var authFacts = map[string]fact{
	"helo_spf": {stage: inspect.StageHelo, kind: kString, doc: "SPF result of the HELO name (RFC 7208 §2.3): none, neutral, pass, fail, softfail, temperror, permerror",
		strs: func(f *inspect.Facts) ([]string, error) {
			r, err := f.HeloSPF()
			if err != nil {
				return nil, err
			}
			return authResult(r.Result)
		}},
	"spf": {stage: inspect.StageMail, kind: kString, doc: "SPF result of the envelope sender (RFC 7208 §2.4; postmaster@HELO for the null sender)",
		strs: func(f *inspect.Facts) ([]string, error) {
			r, err := f.SPF()
			if err != nil {
				return nil, err
			}
			return authResult(r.Result)
		}},
	"spf_domain": {stage: inspect.StageMail, kind: kString, doc: "the domain SPF checked for the envelope sender",
		strs: func(f *inspect.Facts) ([]string, error) {
			r, err := f.SPF()
			if err != nil {
				return nil, err
			}
			return one(r.Domain)
		}},
	"dkim_domain": {stage: inspect.StageData, kind: kString, doc: "the d= domains of the DKIM signatures that verify",
		strs: func(f *inspect.Facts) ([]string, error) {
			a, err := dataAuth(f)
			if err != nil {
				return nil, err
			}
			var out []string
			for _, d := range a.DKIM {
				if d.Result == auth.Pass {
					out = append(out, strings.ToLower(d.Domain))
				}
			}
			return out, nil
		}},
	"dmarc": {stage: inspect.StageData, kind: kString, doc: "DMARC result of the From: domain (RFC 7489): none, pass, fail, temperror, permerror",
		strs: dataResult(func(a *auth.Results) auth.Result { return a.DMARC.Result })},
	"dmarc_policy": {stage: inspect.StageData, kind: kString, doc: "the DMARC policy that applies to the From: domain after pct= sampling: none, quarantine, reject; \"\" without a record",
		strs: dmarcFact(func(f *inspect.Facts, a *auth.Results) string { return a.DMARC.Policy })},
	"dmarc_action": {stage: inspect.StageData, kind: kString, doc: "what the configuration (auth.dmarc) says to do with this message: reject, quarantine or none",
		strs: dmarcFact(func(f *inspect.Facts, _ *auth.Results) string { return f.DMARCAction() })},
	"arc": {stage: inspect.StageData, kind: kString, doc: "ARC chain validation (RFC 8617): none, pass, fail",
		strs: dataResult(func(a *auth.Results) auth.Result { return a.ARC.Result })},
	"arc_sealer": {stage: inspect.StageData, kind: kString, doc: "the d= of the newest ARC-Seal (the forwarder that vouches for the chain)",
		strs: func(f *inspect.Facts) ([]string, error) {
			a, err := dataAuth(f)
			if err != nil {
				return nil, err
			}
			return one(strings.ToLower(a.ARC.Sealer))
		}},
	"arc_trusted": {stage: inspect.StageData, kind: kBool, doc: "the ARC chain passes and its newest sealer is in auth.arc_trusted_sealers",
		flag: func(f *inspect.Facts) (bool, error) {
			a, err := dataAuth(f)
			if err != nil {
				return false, err
			}
			if a.ARC.Result == auth.Unknown {
				return false, errAuthUnknown
			}
			return f.ARCTrusted(), nil
		}},
}

// dkimCond is {dkim: RESULT} or {dkim: {result: RESULT, domain: D,
// selector: S, algorithm: A, all: true}}: a DKIM signature (any by
// default; every one with all) of the message, optionally only those
// with d=D, s=S and a=A, has the result. A message without signatures has
// the single result "none".
type dkimCond struct {
	result    string
	domain    string
	selector  string
	algorithm string
	all       bool
}

func (d dkimCond) eval(c *evalCtx) tri {
	a, err := dataAuth(c.f)
	if err != nil {
		return c.unknownAs
	}
	sigs := a.DKIM
	if len(sigs) == 0 {
		sigs = []auth.DKIMResult{{Result: auth.None}}
	}
	matched, considered, unknown := 0, 0, false
	for _, s := range sigs {
		if d.domain != "" && !strings.EqualFold(strings.TrimSuffix(s.Domain, "."), d.domain) ||
			d.selector != "" && !strings.EqualFold(s.Selector, d.selector) ||
			d.algorithm != "" && !strings.EqualFold(s.Algorithm, d.algorithm) {
			continue
		}
		considered++
		switch {
		case s.Result == auth.Unknown:
			unknown = true
		case string(s.Result) == d.result:
			matched++
		}
	}
	switch {
	case !d.all && matched > 0:
		return tTrue
	case d.all && considered > 0 && matched == considered:
		return tTrue
	case unknown:
		return c.unknownAs
	}
	return tFalse
}

var dkimResults = []string{"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}

// dkim: RESULT, or {result: RESULT, domain: D, selector: S, algorithm: A, all: true}.
func (c *compiler) dkim(v *yaml.Node) cond {
	if c.stage < inspect.StageData {
		c.p.errf(v, "dkim conditions need the data stage, and this rule runs at %s", c.stage)
		return nil
	}
	var d dkimCond
	var resNode *yaml.Node
	if v.Kind == yaml.ScalarNode {
		d.result, resNode = v.Value, v
	} else {
		c.p.mapping(v, "dkim", []string{"result", "domain", "selector", "algorithm", "all"}, func(k, val *yaml.Node) {
			switch k.Value {
			case "result":
				d.result, resNode = val.Value, val
			case "domain":
				d.domain = strings.TrimSuffix(c.p.str(val, "dkim domain"), ".")
			case "selector":
				d.selector = c.p.str(val, "dkim selector")
			case "algorithm":
				d.algorithm = c.p.str(val, "dkim algorithm")
			case "all":
				if val.Value != "true" && val.Value != "false" {
					c.p.errf(val, "dkim all is true or false")
				}
				d.all = val.Value == "true"
			}
		})
	}
	if resNode == nil {
		c.p.errf(v, "dkim needs a result (%s)", strings.Join(dkimResults, ", "))
		return nil
	}
	if !slicesContains(dkimResults, d.result) {
		c.p.errf(resNode, "dkim result %q is not one of %s", d.result, strings.Join(dkimResults, ", "))
		return nil
	}
	return d
}
