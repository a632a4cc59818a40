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
// scanned as two halves at once, two independent chains of table loads
// that the CPU overlaps; the second half starts maxLen-1 bytes early so
// that a pattern crossing the middle is seen whole.
func (m *acMachine) scan(s string, found []uint64) {
	delta, class := m.delta, &m.class
	if len(s) < 512 || m.maxLen > len(s)/4 {
		st := uint32(0)
		for i := 0; i < len(s); i++ {
			st = delta[st+uint32(class[s[i]])]
			if st&acOut != 0 {
				st &^= acOut
				m.report(st, found)
			}
		}
		return
	}
	mid := len(s) / 2
	a, b := s[:mid], s[mid-(m.maxLen-1):]
	sa, sb := uint32(0), uint32(0)
	i := 0
	for ; i < len(a); i++ {
		sa = delta[sa+uint32(class[a[i]])]
		sb = delta[sb+uint32(class[b[i]])]
		if (sa|sb)&acOut != 0 {
			if sa&acOut != 0 {
				sa &^= acOut
				m.report(sa, found)
			}
			if sb&acOut != 0 {
				sb &^= acOut
				m.report(sb, found)
			}
		}
	}
	for ; i < len(b); i++ {
		sb = delta[sb+uint32(class[b[i]])]
		if sb&acOut != 0 {
			sb &^= acOut
			m.report(sb, found)
		}
	}
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
