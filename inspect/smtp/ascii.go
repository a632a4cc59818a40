package smtp

// LowerASCII lower-cases the ASCII letters of s and leaves every other
// byte as it is. Domain names (RFC 1035 §2.3.3), header field names
// (RFC 5322 §1.2.2) and SMTP keywords compare case-insensitively in
// ASCII only; a Unicode-aware lowering would rewrite invalid UTF-8 in a
// hostile name, and so change the bytes a signature covers. It allocates
// only when s has an upper-case letter.
func LowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
