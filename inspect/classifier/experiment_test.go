package classifier_test

import (
	"bytes"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/inspect/classifier"
)

type msg struct {
	name string
	spam bool
	doc  *classifier.Doc
}

func loadExp(t *testing.T, dir string) []msg {
	var out []msg
	for _, g := range []string{"spam-1", "easy-ham-1", "hard-ham-1"} {
		files, _ := filepath.Glob(filepath.Join(dir, g, "*.txt"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if i := bytes.IndexByte(b, '\n'); i >= 0 && bytes.HasPrefix(b, []byte("From ")) {
				b = b[i+1:]
			}
			b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
			c := inspect.ParseContent(bytes.NewReader(b), int64(len(b)), inspect.DepthText, inspect.DefaultContentLimits())
			out = append(out, msg{g + "/" + filepath.Base(f), strings.HasPrefix(g, "spam"), inspect.ClassifierDoc(c)})
		}
	}
	return out
}

func fold(name string, k int) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % uint32(k))
}

func TestExperiment(t *testing.T) {
	dir := os.Getenv("MOAT_EXP_CORPUS")
	if dir == "" {
		t.Skip()
	}
	msgs := loadExp(t, dir)
	var sumAUC, sumR1, sumR5 float64
	for f := 0; f < 5; f++ {
		m := classifier.NewModel(20)
		start := time.Now()
		ntrain := 0
		for _, x := range msgs {
			if fold(x.name, 5) != f {
				m.Learn(x.doc, x.spam, false)
				ntrain++
			}
		}
		tt := time.Since(start)
		var sp, hp []float64
		start = time.Now()
		for _, x := range msgs {
			if fold(x.name, 5) == f {
				r, ok := m.Classify(x.doc)
				if !ok {
					t.Fatal("not ready")
				}
				if x.spam {
					sp = append(sp, r.Prob)
				} else {
					hp = append(hp, r.Prob)
				}
			}
		}
		ct := time.Since(start)
		auc := aucOf(sp, hp)
		r1, r5 := recallAt(sp, hp, 0.001), recallAt(sp, hp, 0.005)
		sumAUC += auc
		sumR1 += r1
		sumR5 += r5
		t.Logf("fold %d: 1-ROCA %.3f%% recall@0.1%% %.1f%% recall@0.5%% %.1f%% train %.0fµs/msg classify %.0fµs/msg (%d spam %d ham)",
			f, 100*(1-auc), 100*r1, 100*r5, float64(tt.Microseconds())/float64(ntrain), float64(ct.Microseconds())/float64(len(sp)+len(hp)), len(sp), len(hp))
	}
	t.Logf("mean: 1-ROCA %.3f%% recall@0.1%% %.1f%% recall@0.5%% %.1f%%", 100*(1-sumAUC/5), 100*sumR1/5, 100*sumR5/5)
}

func aucOf(sp, hp []float64) float64 {
	var c float64
	for _, s := range sp {
		for _, h := range hp {
			switch {
			case s > h:
				c++
			case s == h:
				c += 0.5
			}
		}
	}
	return c / float64(len(sp)*len(hp))
}

func recallAt(sp, hp []float64, fpr float64) float64 {
	h := append([]float64(nil), hp...)
	sort.Float64s(h)
	allowed := int(fpr * float64(len(h)))
	// threshold: strictly above the (allowed+1)-th highest ham
	th := h[len(h)-1-allowed]
	n := 0
	for _, s := range sp {
		if s > th {
			n++
		}
	}
	return float64(n) / float64(len(sp))
}

func TestExperimentLR(t *testing.T) {
	dir := os.Getenv("MOAT_EXP_CORPUS")
	if dir == "" {
		t.Skip()
	}
	msgs := loadExp(t, dir)
	feats := make([][]uint32, len(msgs))
	for i, x := range msgs {
		feats[i] = classifier.IDs(x.doc, 20)
	}
	for _, epochs := range []int{1, 3, 10} {
		for _, lr := range []float64{0.02, 0.1} {
			var sumAUC, sumR1, sumR5 float64
			for f := 0; f < 5; f++ {
				w := make([]float64, 1<<20)
				b := 0.0
				for e := 0; e < epochs; e++ {
					for i, x := range msgs {
						if fold(x.name, 5) == f {
							continue
						}
						s := b
						for _, id := range feats[i] {
							s += w[id]
						}
						p := 1 / (1 + math.Exp(-s))
						y := 0.0
						if x.spam {
							y = 1
						}
						g := lr * (y - p)
						for _, id := range feats[i] {
							w[id] += g
						}
						b += g
					}
				}
				var sp, hp []float64
				for i, x := range msgs {
					if fold(x.name, 5) != f {
						continue
					}
					s := b
					for _, id := range feats[i] {
						s += w[id]
					}
					if x.spam {
						sp = append(sp, s)
					} else {
						hp = append(hp, s)
					}
				}
				auc := aucOf(sp, hp)
				sumAUC += auc
				sumR1 += recallAt(sp, hp, 0.001)
				sumR5 += recallAt(sp, hp, 0.005)
			}
			t.Logf("LR epochs %d lr %.2f: 1-ROCA %.3f%% recall@0.1%% %.1f%% recall@0.5%% %.1f%%", epochs, lr, 100*(1-sumAUC/5), 100*sumR1/5, 100*sumR5/5)
		}
	}
}
