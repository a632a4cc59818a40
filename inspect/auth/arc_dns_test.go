package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"moat/internal/nsdtest"
)

// arcSealer is dkimpy, the signer the tests seal messages with.
const (
	arcPython  = "/usr/bin/python3"
	arcSignBin = "/usr/bin/arcsign"
)

// arcNeedSealer fails the test when dkimpy's arcsign cannot run: it needs
// python3-dkim, and python3-authres to read the Authentication-Results it
// copies into the ARC-Authentication-Results.
func arcNeedSealer(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(arcSignBin); err != nil {
		t.Fatalf("arcsign not installed (%v): install python3-dkim (scripts/install-test-deps.sh)", err)
	}
	if out, err := exec.Command(arcPython, "-c", "import dkim, authres, nacl").CombinedOutput(); err != nil {
		t.Fatalf("dkimpy's arcsign cannot run (%v): install python3-dkim, python3-authres and python3-nacl\n%s", err, out)
	}
}

// arcGenRSA makes a 2048-bit RSA key with openssl and returns the PEM
// file and the base64 SubjectPublicKeyInfo for the p= of a key record.
func arcGenRSA(t *testing.T, dir, name string) (file, p string) {
	t.Helper()
	file = filepath.Join(dir, name+".pem")
	if out, err := exec.Command("openssl", "genrsa", "-out", file, "2048").CombinedOutput(); err != nil {
		t.Fatalf("openssl genrsa: %v\n%s", err, out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", file)
	}
	var signer crypto.Signer
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		signer, _ = k.(crypto.Signer)
	} else if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		signer = k
	}
	if signer == nil {
		t.Fatalf("%s: not a private key openssl would write", file)
	}
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return file, base64.StdEncoding.EncodeToString(der)
}

// arcSign seals msg with dkimpy's arcsign, as hop srvID: the message must
// carry an Authentication-Results field of srvID (arcsign copies it into
// the AAR and takes cv= from its arc= result).
func arcSign(t *testing.T, selector, domain, keyFile, srvID, msg string) string {
	t.Helper()
	cmd := exec.Command(arcPython, arcSignBin, selector, domain, keyFile, srvID)
	return arcRunSealer(t, cmd, msg)
}

// arcSealEd25519 is a short driver around dkimpy's ARC class: arcsign
// always seals with rsa-sha256 (arc_sign hard-codes it) and reads only PEM
// keys, so the driver hands ARC.sign the ed25519 key (a pynacl SigningKey
// from the seed file) in place of parse_pem_private_key. Canonicalization,
// field layout and signing stay dkimpy's.
const arcSealEd25519 = `
import sys, base64, dkim, nacl.signing
sel, dom, seedfile, srv = sys.argv[1:5]
seed = base64.b64decode(open(seedfile).read())
dkim.parse_pem_private_key = lambda _: nacl.signing.SigningKey(seed)
msg = sys.stdin.buffer.read()
a = dkim.ARC(msg, signature_algorithm=b'ed25519-sha256', linesep=b'\r\n')
sig = a.sign(sel.encode(), dom.encode(), b'', srv.encode())
if not sig:
    sys.exit('no ARC set made')
for line in sig:
    sys.stdout.buffer.write(line)
sys.stdout.buffer.write(msg)
`

func arcRunSealer(t *testing.T, cmd *exec.Cmd, msg string) string {
	t.Helper()
	out, err := arcSealerOutput(cmd, msg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// arcSealerOutput runs a sealer on msg; it may run on any goroutine.
func arcSealerOutput(cmd *exec.Cmd, msg string) (string, error) {
	cmd.Stdin = strings.NewReader(msg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", cmd.Args, err, stderr.String())
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "ARC-Seal:") || len(out) <= len(msg) {
		return "", fmt.Errorf("%s made no ARC set:\n%s\n%s", cmd.Args, out, stderr.String())
	}
	return out, nil
}

// arcBase is the message as its author sent it.
const arcBase = "From: Alice <alice@author.test>\r\n" +
	"To: list@example.test\r\n" +
	"Subject: ARC over a real DNS\r\n" +
	"Date: Sun, 06 Dec 2026 17:40:00 +0000\r\n" +
	"Message-ID: <arc-dns-test@author.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"Hello  list, \r\n" +
	"\r\n" +
	"a body with  trailing blanks\t \r\n" +
	"\r\n" +
	"\r\n"

// Messages sealed by dkimpy, keys in a real NSD, verified over UDP/TCP.
func TestARCRealSealerDNS(t *testing.T) {
	arcNeedSealer(t)
	dir := t.TempDir()
	key1, p1 := arcGenRSA(t, dir, "hop1")
	key2, p2 := arcGenRSA(t, dir, "hop2")
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edSeed := filepath.Join(dir, "ed.seed")
	if err := os.WriteFile(edSeed, []byte(base64.StdEncoding.EncodeToString(edPriv.Seed())), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := nsdtest.Start(t, map[string][]string{
		"example.test": {"arc._domainkey TXT " + nsdtest.TXT("v=DKIM1; k=rsa; p="+p1)},
		"forwarder.test": {
			"seal._domainkey TXT " + nsdtest.TXT("v=DKIM1; k=rsa; p="+p2),
			"ed._domainkey TXT " + nsdtest.TXT("v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(edPub)),
		},
	})
	r := wireDNS{addr: srv.Addr}

	// Hop 1, a mailing list, i=1 cv=none; hop 2, a forwarder, i=2 cv=pass.
	hop1 := arcSign(t, "arc", "example.test", key1, "list.example.test",
		"Authentication-Results: list.example.test; spf=pass smtp.mailfrom=alice@author.test\r\n"+arcBase)
	// The two second hops run side by side: each sealer spends seconds
	// importing dkimpy.
	edDone := make(chan error, 1)
	var hop2ed string
	go func() {
		var err error
		hop2ed, err = arcSealerOutput(exec.Command(arcPython, "-c", arcSealEd25519, "ed", "forwarder.test", edSeed, "mx.forwarder.test"),
			"Authentication-Results: mx.forwarder.test; arc=pass (i=1)\r\n"+hop1)
		edDone <- err
	}()
	hop2 := arcSign(t, "seal", "forwarder.test", key2, "mx.forwarder.test",
		"Authentication-Results: mx.forwarder.test; arc=pass (i=1) smtp.remote-ip=127.0.0.1\r\n"+hop1)
	if err := <-edDone; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hop2ed, "a=ed25519-sha256") {
		t.Fatalf("driver did not seal with ed25519:\n%s", hop2ed)
	}

	verify := func(t *testing.T, msg string) ARCResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return VerifyARC(ctx, r, strings.NewReader(msg))
	}
	expectFail := func(t *testing.T, msg, reason string) {
		t.Helper()
		res := verify(t, msg)
		if res.Result != Fail || !strings.Contains(res.Reason, reason) {
			t.Errorf("%+v, want fail with %q", res, reason)
		}
	}

	t.Run("one hop", func(t *testing.T) {
		res := verify(t, hop1)
		if res.Result != Pass || res.Instances != 1 || res.Sealer != "example.test" || res.OldestPass != 1 {
			t.Errorf("%+v", res)
		}
	})
	t.Run("two hops", func(t *testing.T) {
		res := verify(t, hop2)
		if res.Result != Pass || res.Instances != 2 || res.Sealer != "forwarder.test" ||
			strings.Join(res.Sealers, ",") != "example.test,forwarder.test" || res.OldestPass != 1 {
			t.Errorf("%+v", res)
		}
		var names []string
		for _, l := range res.Lookups {
			names = append(names, l.Name)
		}
		if len(names) != 2 || !strings.Contains(strings.Join(names, " "), "seal._domainkey.forwarder.test") ||
			!strings.Contains(strings.Join(names, " "), "arc._domainkey.example.test") {
			t.Errorf("lookups %v", names)
		}
	})
	t.Run("two hops through the streaming API", func(t *testing.T) {
		header, body := arcSplit(t, hop2)
		v := newARCVerifier(context.Background(), r, header)
		for b := []byte(body); len(b) > 0; b = b[min(5, len(b)):] {
			v.Write(b[:min(5, len(b))])
		}
		v.Close()
		if res := v.Result(context.Background()); res.Result != Pass || res.Instances != 2 {
			t.Errorf("%+v", res)
		}
	})
	t.Run("ed25519 seal on an rsa chain", func(t *testing.T) {
		res := verify(t, hop2ed)
		if res.Result != Pass || res.Instances != 2 || res.Sealer != "forwarder.test" {
			t.Errorf("%+v", res)
		}
	})
	t.Run("body changed after sealing", func(t *testing.T) {
		expectFail(t, hop2+"P.S. added by a third hop\r\n", "ARC-Message-Signature i=2: body hash does not match")
		expectFail(t, hop2ed+"P.S.\r\n", "ARC-Message-Signature i=2: body hash does not match")
	})
	t.Run("signed header changed", func(t *testing.T) {
		expectFail(t, strings.Replace(hop2, "Subject: ARC over", "Subject: [list] ARC over", 1),
			"ARC-Message-Signature i=2: signature does not verify")
	})
	t.Run("an ARC-Seal changed", func(t *testing.T) {
		// The seal of i=1 with another t=: the seal of i=2 covers it.
		re := regexp.MustCompile(`(ARC-Seal: i=1;[^\n]*\r\n(?: [^\n]*\r\n)*?) t=(\d+);`)
		changed := re.ReplaceAllString(hop2, "$1 t=12345;")
		if changed == hop2 {
			t.Fatalf("no t= in ARC-Seal i=1:\n%s", hop2)
		}
		expectFail(t, changed, "ARC-Seal i=2: signature does not verify")
		// The newest seal's own cv= flipped.
		expectFail(t, strings.Replace(hop2, "ARC-Seal: i=2; cv=pass", "ARC-Seal: i=2; cv=none", 1), "cv=none where pass is required")
	})
	t.Run("an instance removed", func(t *testing.T) {
		expectFail(t, arcDropSet(t, hop2, 1), "ARC set i=1 missing")
		expectFail(t, arcDropField(t, hop2, "ARC-Authentication-Results: i=2"), "ARC set i=2 has no ARC-Authentication-Results")
	})
	t.Run("no ARC header fields", func(t *testing.T) {
		if res := verify(t, arcBase); res.Result != None || len(res.Lookups) != 0 {
			t.Errorf("%+v", res)
		}
	})
	t.Run("key not published", func(t *testing.T) {
		expectFail(t, strings.ReplaceAll(hop1, "s=arc;", "s=gone;"), "no key at gone._domainkey.example.test")
	})
}

// arcDropField removes the header field that starts with prefix, with its
// continuation lines.
func arcDropField(t *testing.T, msg, prefix string) string {
	t.Helper()
	header, body := arcSplit(t, msg)
	var out strings.Builder
	dropped := false
	for _, f := range header {
		if strings.HasPrefix(f, prefix) {
			dropped = true
			continue
		}
		out.WriteString(f)
	}
	if !dropped {
		t.Fatalf("no field %q", prefix)
	}
	return out.String() + "\r\n" + body
}

// arcDropSet removes the three fields of instance i.
func arcDropSet(t *testing.T, msg string, i int) string {
	t.Helper()
	for _, name := range []string{"ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"} {
		msg = arcDropField(t, msg, fmt.Sprintf("%s: i=%d;", name, i))
	}
	return msg
}
