package quality

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func spam(s float64) Sample { return Sample{Score: s, Spam: true} }
func ham(s float64) Sample  { return Sample{Score: s} }

func near(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return a == b
	}
	return math.Abs(a-b) < 1e-9
}

var inf = math.Inf(1)

// The figures below are worked out by hand in the comments.
func TestEvaluate(t *testing.T) {
	tag, reject := NamedThreshold{"tag", 5}, NamedThreshold{"reject", 12}
	for _, tc := range []struct {
		name       string
		samples    []Sample
		thresholds []NamedThreshold
		maxFPRs    []float64
		want       Report
	}{{
		// Spam 12 and 8 beat all four ham (4+4); spam 5 ties ham 5 (½)
		// and beats 2, 0, 0 (3): U = 11.5 of 12, 1-ROCA% = 100×0.5/12.
		// Rate 0.2 allows no ham (1/4 > 0.2): 5 would flag the ham 5
		// with the spam 5, so the threshold stays at 8.
		name:       "ties",
		samples:    []Sample{spam(12), spam(8), spam(5), ham(5), ham(2), ham(0), ham(0)},
		thresholds: []NamedThreshold{tag, reject},
		maxFPRs:    []float64{0, 0.2, 0.25, 1},
		want: Report{Spam: 3, Ham: 4,
			Thresholds: []AtThreshold{
				{Name: "tag", Threshold: 5, SpamCaught: 3, HamFlagged: 1, Recall: 1, FPR: 0.25},
				{Name: "reject", Threshold: 12, SpamCaught: 1, HamFlagged: 0, Recall: 1.0 / 3},
			},
			AtFPR: []AtFPR{
				{MaxFPR: 0, Threshold: 8, SpamCaught: 2, Recall: 2.0 / 3},
				{MaxFPR: 0.2, Threshold: 8, SpamCaught: 2, Recall: 2.0 / 3},
				{MaxFPR: 0.25, Threshold: 5, SpamCaught: 3, HamFlagged: 1, Recall: 1, FPR: 0.25},
				{MaxFPR: 1, Threshold: 0, SpamCaught: 3, HamFlagged: 4, Recall: 1, FPR: 1},
			},
			OneMinusROCA: 100 * 0.5 / 12,
		},
	}, {
		// Without ham no rate is exceeded: the lowest score is the
		// threshold. The ROC curve is undefined.
		name:       "no ham",
		samples:    []Sample{spam(3), spam(1)},
		thresholds: []NamedThreshold{{"tag", 2}},
		maxFPRs:    []float64{0.001},
		want: Report{Spam: 2,
			Thresholds:   []AtThreshold{{Name: "tag", Threshold: 2, SpamCaught: 1, Recall: 0.5}},
			AtFPR:        []AtFPR{{MaxFPR: 0.001, Threshold: 1, SpamCaught: 2, Recall: 1}},
			OneMinusROCA: math.NaN(),
		},
	}, {
		name:       "no spam",
		samples:    []Sample{ham(3), ham(1)},
		thresholds: []NamedThreshold{{"tag", 2}},
		maxFPRs:    []float64{0.5},
		want: Report{Ham: 2,
			Thresholds:   []AtThreshold{{Name: "tag", Threshold: 2, HamFlagged: 1, FPR: 0.5}},
			AtFPR:        []AtFPR{{MaxFPR: 0.5, Threshold: 3, HamFlagged: 1, FPR: 0.5}},
			OneMinusROCA: math.NaN(),
		},
	}, {
		// One tie holds everything: any threshold flags all or nothing,
		// and all flags half the messages as ham (1 > 0.5). AUC ½.
		name:       "all equal",
		samples:    []Sample{spam(4), ham(4), spam(4), ham(4)},
		thresholds: []NamedThreshold{{"tag", 4}},
		maxFPRs:    []float64{0.5},
		want: Report{Spam: 2, Ham: 2,
			Thresholds:   []AtThreshold{{Name: "tag", Threshold: 4, SpamCaught: 2, HamFlagged: 2, Recall: 1, FPR: 1}},
			AtFPR:        []AtFPR{{MaxFPR: 0.5, Threshold: inf}},
			OneMinusROCA: 50,
		},
	}, {
		name:    "perfect",
		samples: []Sample{ham(1), spam(2)},
		maxFPRs: []float64{0.001},
		want: Report{Spam: 1, Ham: 1,
			AtFPR:        []AtFPR{{MaxFPR: 0.001, Threshold: 2, SpamCaught: 1, Recall: 1}},
			OneMinusROCA: 0,
		},
	}, {
		name:    "reversed",
		samples: []Sample{ham(2), spam(1)},
		maxFPRs: []float64{0.001},
		want: Report{Spam: 1, Ham: 1,
			AtFPR:        []AtFPR{{MaxFPR: 0.001, Threshold: inf}},
			OneMinusROCA: 100,
		},
	}, {
		name:       "empty",
		thresholds: []NamedThreshold{tag},
		maxFPRs:    []float64{0.001},
		want: Report{
			Thresholds:   []AtThreshold{{Name: "tag", Threshold: 5}},
			AtFPR:        []AtFPR{{MaxFPR: 0.001, Threshold: inf}},
			OneMinusROCA: math.NaN(),
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := Evaluate(tc.samples, tc.thresholds, tc.maxFPRs)
			if err := sameReport(got, tc.want); err != "" {
				t.Errorf("%s\n got %+v\nwant %+v", err, got, tc.want)
			}
		})
	}
}

func sameReport(got, want Report) string {
	switch {
	case got.Spam != want.Spam || got.Ham != want.Ham:
		return "counts differ"
	case !near(got.OneMinusROCA, want.OneMinusROCA):
		return "1-ROCA% differs"
	case len(got.Thresholds) != len(want.Thresholds) || len(got.AtFPR) != len(want.AtFPR):
		return "lengths differ"
	}
	for i, g := range got.Thresholds {
		w := want.Thresholds[i]
		if g.Name != w.Name || g.Threshold != w.Threshold || g.SpamCaught != w.SpamCaught ||
			g.HamFlagged != w.HamFlagged || !near(g.Recall, w.Recall) || !near(g.FPR, w.FPR) {
			return "threshold " + w.Name + " differs"
		}
	}
	for i, g := range got.AtFPR {
		w := want.AtFPR[i]
		if g.MaxFPR != w.MaxFPR || g.Threshold != w.Threshold || g.SpamCaught != w.SpamCaught ||
			g.HamFlagged != w.HamFlagged || !near(g.Recall, w.Recall) || !near(g.FPR, w.FPR) {
			return "AtFPR differs"
		}
	}
	return ""
}

// bruteAUC compares every spam with every ham.
func bruteAUC(samples []Sample) float64 {
	var u float64
	var pairs int
	for _, s := range samples {
		if !s.Spam {
			continue
		}
		for _, h := range samples {
			if h.Spam {
				continue
			}
			pairs++
			switch {
			case s.Score > h.Score:
				u++
			case s.Score == h.Score:
				u += 0.5
			}
		}
	}
	if pairs == 0 {
		return math.NaN()
	}
	return 100 * (1 - u/float64(pairs))
}

// bruteAtFPR tries every distinct score as the threshold and keeps the
// lowest whose flagged ham stays within the rate.
func bruteAtFPR(samples []Sample, maxFPR float64) AtFPR {
	best := AtFPR{MaxFPR: maxFPR, Threshold: inf}
	var nSpam, nHam int
	for _, s := range samples {
		if s.Spam {
			nSpam++
		} else {
			nHam++
		}
	}
	for _, c := range samples {
		var spam, ham int
		for _, s := range samples {
			if s.Score >= c.Score {
				if s.Spam {
					spam++
				} else {
					ham++
				}
			}
		}
		if rate(ham, nHam) <= maxFPR && c.Score < best.Threshold {
			best = AtFPR{MaxFPR: maxFPR, Threshold: c.Score, SpamCaught: spam, HamFlagged: ham,
				Recall: rate(spam, nSpam), FPR: rate(ham, nHam)}
		}
	}
	return best
}

// Evaluate agrees with the brute-force definitions on random samples,
// with scores from a small set (many ties) or continuous.
func TestEvaluateMatchesBruteForce(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 0))
	maxFPRs := []float64{0, 0.001, 0.005, 0.1, 0.3, 1}
	for i := range 500 {
		n := r.IntN(80)
		samples := make([]Sample, n)
		discrete := r.IntN(2) == 0
		pSpam := r.Float64()
		for j := range samples {
			samples[j].Spam = r.Float64() < pSpam
			if discrete {
				samples[j].Score = float64(r.IntN(8)) - 2
			} else {
				samples[j].Score = r.NormFloat64() * 5
			}
			if samples[j].Spam {
				samples[j].Score += r.Float64() * 4
			}
		}
		got := Evaluate(samples, nil, maxFPRs)
		if want := bruteAUC(samples); !near(got.OneMinusROCA, want) {
			t.Fatalf("seed %d, case %d: 1-ROCA%% %v, brute force %v\n%v", seed, i, got.OneMinusROCA, want, samples)
		}
		for k, m := range maxFPRs {
			want := bruteAtFPR(samples, m)
			if g := got.AtFPR[k]; g.Threshold != want.Threshold || g.SpamCaught != want.SpamCaught ||
				g.HamFlagged != want.HamFlagged || !near(g.Recall, want.Recall) || !near(g.FPR, want.FPR) {
				t.Fatalf("seed %d, case %d: at %v: %+v, brute force %+v\n%v", seed, i, m, g, want, samples)
			}
		}
	}
}
