package rules

// A rule set with a hundred regex rules would otherwise search a message
// body once per rule for that rule's required literal. The literals of a
// set are compiled into one Aho-Corasick automaton (Aho and Corasick,
// "Efficient string matching", CACM 1975), as a full transition table,
// so one pass over the body finds every literal it contains.
//
// The table is kept small enough to stay in cache: bytes that no pattern
// uses share one column (byte classes), rows are flat in one slice, and a
// state's number is its row's offset, with the top bit set when patterns
// end there, so the loop per byte is two loads and a test. An automaton
// built to fold case gives 'A'–'Z' the columns of 'a'–'z': scanning with
// it is scanning the ASCII-lower-cased text, without making that text.

const acOut = 1 << 31 // set in a transition to a state where patterns end

// acMachine matches a fixed set of byte strings in one pass.
type acMachine struct {
	class  [256]uint8
	nclass uint32
	delta  []uint32           // (state offset + class) → next state offset | acOut
	out    map[uint32][]int32 // state offset → ids of the patterns that end there
	n      int                // patterns
	maxLen int                // of the longest pattern
}

// buildAC compiles patterns (none empty); pattern i is reported as id i.
// With fold, the patterns must be lower case and the machine matches
// them in ASCII-case-folded text.
func buildAC(patterns []string, fold bool) *acMachine {
	m := &acMachine{n: len(patterns), out: map[uint32][]int32{}}
	// Byte classes: 0 for bytes no pattern holds, one each for the rest.
	var used [256]bool
	for _, p := range patterns {
		m.maxLen = max(m.maxLen, len(p))
		for i := 0; i < len(p); i++ {
			used[p[i]] = true
		}
	}
	n := uint8(1)
	for b := 0; b < 256; b++ {
		if used[b] {
			m.class[b] = n
			n++
		}
	}
	if fold {
		for b := 'A'; b <= 'Z'; b++ {
			m.class[b] = m.class[b+'a'-'A']
		}
	}
	nc := int(n)
	m.nclass = uint32(nc)

	// The trie, as rows of nc transitions (-1: none yet).
	var delta []int32
	var outs [][]int32
	newState := func() int32 {
		for range nc {
			delta = append(delta, -1)
		}
		outs = append(outs, nil)
		return int32(len(outs) - 1)
	}
	newState() // the root, 0
	for id, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			c := int(m.class[p[i]])
			next := delta[int(s)*nc+c]
			if next < 0 {
				next = newState()
				delta[int(s)*nc+c] = next
			}
			s = next
		}
		outs[s] = append(outs[s], int32(id))
	}
	// Breadth first: a state's failure state is shallower, so its row
	// and outputs are complete when the state is reached.
	fail := make([]int32, len(outs))
	var queue []int32
	for c := 0; c < nc; c++ {
		if v := delta[c]; v > 0 {
			queue = append(queue, v)
		} else {
			delta[c] = 0
		}
	}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if f := fail[u]; len(outs[f]) > 0 {
			outs[u] = append(outs[u], outs[f]...)
		}
		for c := 0; c < nc; c++ {
			v := delta[int(u)*nc+c]
			if v < 0 {
				delta[int(u)*nc+c] = delta[int(fail[u])*nc+c]
				continue
			}
			fail[v] = delta[int(fail[u])*nc+c]
			queue = append(queue, v)
		}
	}
	m.delta = make([]uint32, len(delta))
	for i, v := range delta {
		d := uint32(v) * uint32(nc)
		if len(outs[v]) > 0 {
			d |= acOut
		}
		m.delta[i] = d
	}
	for s, o := range outs {
		if len(o) > 0 {
			m.out[uint32(s*nc)] = o
		}
	}
	return m
}

// scan sets the bit of every pattern that occurs in s. A long s is
// scanned as four quarters at once: four independent chains of table
// loads, which the CPU overlaps, where one chain waits on each load.
// Each quarter after the first starts maxLen-1 bytes early, so that a
// pattern across a seam is seen whole.
func (m *acMachine) scan(s string, found []uint64) {
	const ways = 4
	if len(s) < 1024 || m.maxLen > len(s)/(2*ways) {
		m.scan1(s, found)
		return
	}
	q := len(s) / ways
	back := m.maxLen - 1
	// Chains 1–3 start back bytes before their quarter; chain 0 covers
	// its quarter, chain 3 the rest of s. All run n steps together,
	// then chain 3 finishes alone.
	s0 := s[:q]
	s1 := s[q-back : 2*q]
	s2 := s[2*q-back : 3*q]
	s3 := s[3*q-back:]
	n := len(s0) // the shortest
	delta, class := m.delta, &m.class
	var a, b, c, d uint32
	// Chains 1-3 are back bytes longer than chain 0: run them alone
	// over their first back bytes, so that all four end their common
	// part at their quarter's end.
	for i := 0; i < back; i++ {
		b = m.step(b, s1[i], found)
		c = m.step(c, s2[i], found)
		d = m.step(d, s3[i], found)
	}
	s1, s2, s3 = s1[back:], s2[back:], s3[back:]
	s1, s2 = s1[:n], s2[:n]
	s3a := s3[:n]
	for i := 0; i < n; i++ {
		a = delta[a+uint32(class[s0[i]])]
		b = delta[b+uint32(class[s1[i]])]
		c = delta[c+uint32(class[s2[i]])]
		d = delta[d+uint32(class[s3a[i]])]
		if (a|b|c|d)&acOut != 0 {
			if a&acOut != 0 {
				a &^= acOut
				m.report(a, found)
			}
			if b&acOut != 0 {
				b &^= acOut
				m.report(b, found)
			}
			if c&acOut != 0 {
				c &^= acOut
				m.report(c, found)
			}
			if d&acOut != 0 {
				d &^= acOut
				m.report(d, found)
			}
		}
	}
	for i := n; i < len(s3); i++ {
		d = m.step(d, s3[i], found)
	}
}

// scan1 is scan in one chain.
func (m *acMachine) scan1(s string, found []uint64) {
	st := uint32(0)
	for i := 0; i < len(s); i++ {
		st = m.step(st, s[i], found)
	}
}

// step moves from state st over byte c, reporting what ends there.
func (m *acMachine) step(st uint32, c byte, found []uint64) uint32 {
	st = m.delta[st+uint32(m.class[c])]
	if st&acOut != 0 {
		st &^= acOut
		m.report(st, found)
	}
	return st
}

func (m *acMachine) report(st uint32, found []uint64) {
	for _, id := range m.out[st] {
		found[id>>6] |= 1 << (id & 63)
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
		l.exact = buildAC(l.pats[0], false)
	}
	if len(l.pats[1]) > 0 {
		l.folded = buildAC(l.pats[1], true)
	}
}
