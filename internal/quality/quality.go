// Package quality measures how well a filter separates spam from ham on
// labelled mail: how much spam each action threshold catches and how much
// ham it flags, which threshold keeps flagged ham under a given rate, and
// the area under the ROC curve, reported as the TREC spam track's 1-ROCA%.
//
// A message is flagged at threshold t when its score is at least t. Every
// figure is computed from the scores alone: rules whose action does not
// depend on the score (a rule that rejects outright, an allowlist) are not
// seen here. The package does no I/O.
package quality

import (
	"math"
	"slices"
)

// Sample is one judged message: its score (never NaN) and whether it is
// spam.
type Sample struct {
	Score float64
	Spam  bool
}

// NamedThreshold is an action threshold to evaluate, such as tag at 5.
type NamedThreshold struct {
	Name      string
	Threshold float64
}

// AtThreshold is what a threshold does to the samples. Recall is the
// share of spam flagged (0 without spam), FPR the share of ham flagged
// (0 without ham).
type AtThreshold struct {
	Name                   string
	Threshold              float64
	SpamCaught, HamFlagged int
	Recall, FPR            float64
}

// AtFPR is the lowest threshold that flags at most MaxFPR of the ham, and
// what it catches. When no score qualifies — every candidate flags too
// much ham — Threshold is +Inf and nothing is flagged.
type AtFPR struct {
	MaxFPR, Threshold, Recall, FPR float64
	SpamCaught, HamFlagged         int
}

// Report holds the figures of one evaluation.
type Report struct {
	Spam, Ham  int
	Thresholds []AtThreshold // one per threshold asked for, in that order
	AtFPR      []AtFPR       // one per maximum rate asked for, in that order
	// OneMinusROCA is 100 × (1 − AUC), in percent: 0 for a perfect
	// separation, 50 for a coin toss. It is NaN without spam or without
	// ham, where the ROC curve is not defined.
	OneMinusROCA float64
}

// Evaluate computes the Report of samples for the given action thresholds
// and maximum rates of flagged ham (0.001 for 0.1 %).
//
// For each maximum rate, the candidate thresholds are the distinct scores:
// a threshold between two scores flags what the higher of them flags, so
// no other value could do better. Messages with equal scores are flagged
// together — a threshold cannot split a tie — so when ham shares its score
// with spam, reaching that spam means flagging that ham too, and the
// chosen threshold may flag less ham than allowed (and catch less spam)
// than a rate computed message by message would suggest.
//
// The AUC is the Mann–Whitney statistic: the probability that a random
// spam scores above a random ham, ties counting one half. It is computed
// exactly in O(n log n).
func Evaluate(samples []Sample, thresholds []NamedThreshold, maxFPRs []float64) Report {
	var r Report
	for _, s := range samples {
		if s.Spam {
			r.Spam++
		} else {
			r.Ham++
		}
	}
	groups := tieGroups(samples)

	for _, t := range thresholds {
		a := AtThreshold{Name: t.Name, Threshold: t.Threshold}
		for _, g := range groups {
			if g.score >= t.Threshold {
				a.SpamCaught += g.spam
				a.HamFlagged += g.ham
			}
		}
		a.Recall, a.FPR = rate(a.SpamCaught, r.Spam), rate(a.HamFlagged, r.Ham)
		r.Thresholds = append(r.Thresholds, a)
	}

	for _, maxFPR := range maxFPRs {
		a := AtFPR{MaxFPR: maxFPR, Threshold: math.Inf(1)}
		// Lower the threshold one tie group at a time, from the top, for
		// as long as the ham flagged stays within the rate: flagged ham
		// only grows as the threshold falls, so the last group that
		// passes gives the lowest threshold.
		spam, ham := 0, 0
		for i := len(groups) - 1; i >= 0; i-- {
			spam, ham = spam+groups[i].spam, ham+groups[i].ham
			if rate(ham, r.Ham) > maxFPR {
				break
			}
			a.Threshold, a.SpamCaught, a.HamFlagged = groups[i].score, spam, ham
		}
		a.Recall, a.FPR = rate(a.SpamCaught, r.Spam), rate(a.HamFlagged, r.Ham)
		r.AtFPR = append(r.AtFPR, a)
	}

	r.OneMinusROCA = math.NaN()
	if r.Spam > 0 && r.Ham > 0 {
		// Mann–Whitney U: for each spam, the ham scoring below it, plus
		// half the ham scoring the same.
		u, hamBelow := 0.0, 0
		for _, g := range groups {
			u += float64(g.spam) * (float64(hamBelow) + float64(g.ham)/2)
			hamBelow += g.ham
		}
		auc := u / (float64(r.Spam) * float64(r.Ham))
		r.OneMinusROCA = 100 * (1 - auc)
	}
	return r
}

// group counts the spam and ham sharing one score.
type group struct {
	score     float64
	spam, ham int
}

// tieGroups returns one group per distinct score, in ascending order.
func tieGroups(samples []Sample) []group {
	sorted := slices.Clone(samples)
	slices.SortFunc(sorted, func(a, b Sample) int {
		switch {
		case a.Score < b.Score:
			return -1
		case a.Score > b.Score:
			return 1
		}
		return 0
	})
	var gs []group
	for _, s := range sorted {
		if len(gs) == 0 || gs[len(gs)-1].score != s.Score {
			gs = append(gs, group{score: s.Score})
		}
		if s.Spam {
			gs[len(gs)-1].spam++
		} else {
			gs[len(gs)-1].ham++
		}
	}
	return gs
}

// rate is n/of, and 0 when there is nothing to count.
func rate(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}
