package auth

// Summary is the compact form of Results that logs and records carry:
// the same keys in moat serve's log and in moat analyze's records, so
// the two can be compared session by session.
type Summary struct {
	SPF       string `json:"spf,omitempty"`
	SPFDomain string `json:"spf_domain,omitempty"`
	HELOSPF   string `json:"helo_spf,omitempty"`
	// DKIM is one "result:domain:selector" per signature; "none" for an
	// unsigned message.
	DKIM        []string `json:"dkim,omitempty"`
	DMARC       string   `json:"dmarc,omitempty"`
	DMARCPolicy string   `json:"dmarc_policy,omitempty"`
	ARC         string   `json:"arc,omitempty"`
	ARCSealer   string   `json:"arc_sealer,omitempty"`
}

// Summary returns r's summary; nil for nil.
func (r *Results) Summary() *Summary {
	if r == nil {
		return nil
	}
	s := &Summary{
		SPF: string(r.SPF.Result), SPFDomain: r.SPF.Domain, HELOSPF: string(r.HELO.Result),
		DMARC: string(r.DMARC.Result), DMARCPolicy: r.DMARC.Policy,
		ARC: string(r.ARC.Result), ARCSealer: r.ARC.Sealer,
	}
	for _, d := range r.DKIM {
		s.DKIM = append(s.DKIM, string(d.Result)+":"+d.Domain+":"+d.Selector)
	}
	if len(s.DKIM) == 0 {
		s.DKIM = []string{string(None)}
	}
	return s
}
