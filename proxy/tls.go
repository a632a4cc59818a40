package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// loadCertificate reads the configured certificate, or generates a
// self-signed one for hostname when none is configured: STARTTLS with an
// unverifiable certificate still defeats passive eavesdropping, which is
// all opportunistic SMTP TLS promises (RFC 7435).
func loadCertificate(cfg TLSConfig, hostname string) (cert *tls.Certificate, selfSigned bool, err error) {
	if cfg.CertFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, false, fmt.Errorf("tls: %w", err)
		}
		return &c, false, nil
	}
	c, err := selfSignedCertificate(hostname)
	return c, true, err
}

func selfSignedCertificate(hostname string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostname, Organization: []string{"moat self-signed"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{hostname},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// serverTLSConfig is the TLS configuration for clients: TLS 1.2 or newer,
// the certificate in force looked up per handshake so a reload takes
// effect for the next session.
func (s *Server) serverTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
}

// upstreamTLSConfig is the client TLS configuration towards the upstream
// for the configured mode.
func upstreamTLSConfig(cfg *UpstreamConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS == "opportunistic" {
		// Like Postfix's "may": encrypt, but do not verify — the
		// alternative is plaintext, which is worse.
		tc.InsecureSkipVerify = true
		return tc, nil
	}
	tc.ServerName = cfg.TLSServerName
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(string(cfg.Address))
		if err != nil {
			return nil, err
		}
		tc.ServerName = host
	}
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("upstream.tls_ca_file: no PEM certificates in " + cfg.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// tlsVersionName names a TLS version as the Received header and the log
// show it.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLS1.0"
	case tls.VersionTLS11:
		return "TLS1.1"
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS13:
		return "TLS1.3"
	}
	return fmt.Sprintf("TLS(0x%04x)", v)
}
