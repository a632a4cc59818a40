package rules

import (
	"errors"

	"moat/inspect"
	"moat/inspect/reputation"
)

// errNoRatio: nothing counted yet, so no reject ratio (unknown, not 0).
var errNoRatio = errors.New("reputation: nothing counted in the window")

// repFact is a reputation count or ratio of the client network (from
// connect) or the sender domain (from mail), unknown without a store or
// when the store failed.
func repFact(domain bool, doc string, val func(c reputation.Counts) (float64, error)) fact {
	st := inspect.StageConnect
	if domain {
		st = inspect.StageMail
	}
	numErr := func(f *inspect.Facts) (float64, error) {
		c, err := f.Reputation(domain)
		if err != nil {
			return 0, err
		}
		return val(c)
	}
	return fact{stage: st, kind: kNumber, doc: doc, numErr: numErr,
		num: func(f *inspect.Facts) (float64, bool) {
			v, err := numErr(f)
			return v, err == nil
		}}
}

func repCount(o reputation.Outcome) func(reputation.Counts) (float64, error) {
	return func(c reputation.Counts) (float64, error) { return float64(c.Of(o)), nil }
}

func repRatio(c reputation.Counts) (float64, error) {
	r, ok := c.RejectRatio()
	if !ok {
		return 0, errNoRatio
	}
	return r, nil
}
