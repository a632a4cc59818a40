package inspect

import (
	"slices"
	"testing"
)

func TestDecodeHeaderText(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		charset   string // the message's charset, for raw 8-bit
		want      string
		malformed []string
	}{
		{"plain ASCII", "Hello world", "", "Hello world", nil},
		{"raw UTF-8 (RFC 6532)", "Grüße", "", "Grüße", nil},
		{"Q UTF-8", "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "", "Grüße aus Köln", nil},
		{"B UTF-8", "=?utf-8?B?w6lsw6h2ZQ==?=", "", "élève", nil},
		{"B without padding", "=?utf-8?B?w6lsw6h2ZQ?=", "", "élève", nil},
		{"lower-case q and hex", "=?utf-8?q?caf=c3=a9?=", "", "café", nil},
		{"Q ISO-8859-1", "=?ISO-8859-1?Q?caf=E9?=", "", "café", nil},
		{"Q ISO-8859-2", "=?ISO-8859-2?Q?=A3=F3d=BC?=", "", "Łódź", nil},
		{"B ISO-8859-2", "=?iso-8859-2?b?o/NkvA==?=", "", "Łódź", nil},
		{"B windows-1251", "=?windows-1251?B?z/Do4uXy?=", "", "Привет", nil},
		{"B KOI8-R", "=?KOI8-R?B?8NLJ18XU?=", "", "Привет", nil},
		{"Q KOI8-R", "=?koi8-r?Q?=F0=D2=C9=D7=C5=D4?=", "", "Привет", nil},
		{"B GB2312", "=?GB2312?B?1tDOxA==?=", "", "中文", nil},
		{"B Shift_JIS", "=?Shift_JIS?B?k/qWe4zq?=", "", "日本語", nil},
		{"B ISO-2022-JP", "=?ISO-2022-JP?B?GyRCRnxLXDhsJE4lRiUtJTklSBsoQg==?=", "", "日本語のテキスト", nil},
		{"RFC 2231 language suffix", "=?utf-8*en?Q?hello?=", "", "hello", nil},
		{"adjacent words join without the space (RFC 2047 §6.2)", "=?UTF-8?Q?a?= =?UTF-8?Q?b?=", "", "ab", nil},
		{"adjacent words across folding whitespace", "=?UTF-8?Q?a?=  \t =?ISO-8859-1?Q?=E9?=", "", "aé", nil},
		{"text between words is kept", "=?UTF-8?Q?a?= and =?UTF-8?Q?b?=", "", "a and b", nil},
		{"word then text", "=?UTF-8?Q?Re:?= hello", "", "Re: hello", nil},
		{"text then word", "Re: =?UTF-8?Q?caf=C3=A9?=", "", "Re: café", nil},
		{"UTF-8 split across words", "=?UTF-8?B?w6k=?= =?UTF-8?Q?=C3?= =?UTF-8?Q?=A9?=", "", "éé", nil},
		{"Shift_JIS split across words", "=?Shift_JIS?B?k/qW?= =?Shift_JIS?B?e4zq?=", "", "日本語", nil},
		{"word inside a token", "x=?UTF-8?Q?y?=z", "", "xyz", nil},
		{"underscore is a space in Q", "=?UTF-8?Q?a_b?=", "", "a b", nil},
		{"space inside a Q word (broken mailers)", "=?UTF-8?Q?a b?=", "", "a b", nil},
		{"unknown charset, valid UTF-8", "=?x-unknown?Q?caf=C3=A9?=", "", "café", []string{MalformedCharsetUnknown}},
		{"unknown charset, Latin-1 bytes", "=?x-unknown?Q?caf=E9?=", "", "café", []string{MalformedCharsetUnknown}},
		{"invalid UTF-8 in a UTF-8 word", "=?UTF-8?Q?a=FFb?=", "", "a\uFFFDb", []string{MalformedCharsetInvalid}},
		// Malformed words stay as they were.
		{"unknown encoding", "=?UTF-8?X?abc?=", "", "=?UTF-8?X?abc?=", []string{MalformedEncodedWord}},
		{"bad base64", "=?UTF-8?B?#?=", "", "=?UTF-8?B?#?=", []string{MalformedEncodedWord}},
		{"unterminated", "=?UTF-8?Q?abc", "", "=?UTF-8?Q?abc", []string{MalformedEncodedWord}},
		{"empty charset", "=??Q?abc?=", "", "=??Q?abc?=", []string{MalformedEncodedWord}},
		{"lone marker", "price =? 5", "", "price =? 5", []string{MalformedEncodedWord}},
		{"bad Q escape kept", "=?UTF-8?Q?a=ZZb?=", "", "a=ZZb", []string{MalformedEncodedWord}},
		{"malformed then valid", "=?bad =?UTF-8?Q?ok?=", "", "=?bad ok", []string{MalformedEncodedWord}},
		// Raw 8-bit bytes that are not UTF-8.
		{"raw Latin-1", "caf\xe9", "", "café", []string{MalformedHeader8bit}},
		{"raw in the message charset", "\xf0\xd2\xc9\xd7\xc5\xd4", "koi8-r", "Привет", []string{MalformedHeader8bit}},
		{"raw 8-bit next to a word", "\xe9 =?UTF-8?Q?x?=", "", "é x", []string{MalformedHeader8bit}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f flaws
			got := decodeHeaderText(tt.in, tt.charset, &f)
			if got != tt.want {
				t.Errorf("decodeHeaderText(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if !slices.Equal(f.list, tt.malformed) {
				t.Errorf("flaws = %q, want %q", f.list, tt.malformed)
			}
		})
	}
}
