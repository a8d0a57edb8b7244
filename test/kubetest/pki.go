package kubetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// pki is a throwaway CA with the certificates and keys one cluster needs, all PEM.
type pki struct {
	caCert                  []byte
	servingCert, servingKey []byte // kube-apiserver, for 127.0.0.1, ::1, localhost and servingIPs
	adminCert, adminKey     []byte // AdminUser in system:masters
	saKey, saPub            []byte // ServiceAccount token signing

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// newPKI makes the CA and the cluster's certificates; the serving certificate is also valid for
// extraIPs and extraNames.
func newPKI(extraIPs []net.IP, extraNames []string) (*pki, error) {
	now := time.Now()
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caTemplate := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "kubetest-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := sign(caTemplate, caTemplate, caKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	p := &pki{caCert: certPEM(caDER), ca: ca, caKey: caKey}
	if p.servingCert, p.servingKey, err = p.leaf(pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, extraIPs...), append([]string{"localhost"}, extraNames...)); err != nil {
		return nil, err
	}
	if p.adminCert, p.adminKey, err = p.leaf(pkix.Name{CommonName: AdminUser, Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}
	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	if p.saKey, err = privatePEM(saKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal service account public key: %w", err)
	}
	p.saPub = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	return p, nil
}

// leaf signs a new key's certificate with the CA.
func (p *pki) leaf(subject pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, names []string) (cert, key []byte, err error) {
	now := time.Now()
	k, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	der, err := sign(&x509.Certificate{
		Subject:     subject,
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(7 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: ips,
		DNSNames:    names,
	}, p.ca, k, p.caKey)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := privatePEM(k)
	return certPEM(der), keyPEM, err
}

// newKey makes a P-256 key: quick to generate, and accepted by the apiserver for TLS and for
// signing ServiceAccount tokens (ES256).
func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

func sign(template, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	template.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, template, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", template.Subject.CommonName, err)
	}
	return der, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func privatePEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
