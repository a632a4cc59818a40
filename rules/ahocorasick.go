package rules

// A rule set with a hundred regex rules would otherwise search a message
// body once per rule for that rule's required literal. The literals of a
// set are compiled into one Aho-Corasick automaton (Aho and Corasick,
// "Efficient string matching", CACM 1975), as a full transition table,
// so one pass over the body finds every literal it contains.

// acMachine matches a fixed set of byte strings in one pass.
type acMachine struct {
	delta [][256]int32 // state × byte → next state
	out   [][]int32    // state → ids of the patterns that end here
	n     int          // patterns
}

// buildAC compiles patterns (none empty); pattern i is reported as id i.
func buildAC(patterns []string) *acMachine {
	m := &acMachine{n: len(patterns)}
	newState := func() int32 {
		var row [256]int32
		for i := range row {
			row[i] = -1
		}
		m.delta = append(m.delta, row)
		m.out = append(m.out, nil)
		return int32(len(m.delta) - 1)
	}
	newState() // the root, 0
	for id, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			next := m.delta[s][p[i]]
			if next < 0 {
				next = newState()
				m.delta[s][p[i]] = next
			}
			s = next
		}
		m.out[s] = append(m.out[s], int32(id))
	}
	// Breadth first: a state's failure state is shallower, so its row
	// and outputs are complete when the state is reached.
	fail := make([]int32, len(m.delta))
	var queue []int32
	for b := 0; b < 256; b++ {
		if v := m.delta[0][b]; v > 0 {
			queue = append(queue, v)
		} else {
			m.delta[0][b] = 0
		}
	}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if f := fail[u]; len(m.out[f]) > 0 {
			m.out[u] = append(m.out[u], m.out[f]...)
		}
		for b := 0; b < 256; b++ {
			v := m.delta[u][b]
			if v < 0 {
				m.delta[u][b] = m.delta[fail[u]][b]
				continue
			}
			fail[v] = m.delta[fail[u]][b]
			queue = append(queue, v)
		}
	}
	return m
}

// scan sets the bit of every pattern that occurs in s.
func (m *acMachine) scan(s string, found []uint64) {
	st := int32(0)
	for i := 0; i < len(s); i++ {
		st = m.delta[st][s[i]]
		for _, id := range m.out[st] {
			found[id>>6] |= 1 << (id & 63)
		}
	}
}

// literals collects the prefilter literals of a rule set while it is
// parsed: case-folded ones and exact ones, each distinct literal once.
type literals struct {
	ids    [2]map[string]int // [exact, folded]
	pats   [2][]string
	folded *acMachine
	exact  *acMachine
}

func (l *literals) add(lit string, fold bool) int {
	k := 0
	if fold {
		k = 1
	}
	if l.ids[k] == nil {
		l.ids[k] = map[string]int{}
	}
	if id, ok := l.ids[k][lit]; ok {
		return id
	}
	id := len(l.pats[k])
	l.ids[k][lit] = id
	l.pats[k] = append(l.pats[k], lit)
	return id
}

func (l *literals) build() {
	if len(l.pats[0]) > 0 {
		l.exact = buildAC(l.pats[0])
	}
	if len(l.pats[1]) > 0 {
		l.folded = buildAC(l.pats[1])
	}
}
