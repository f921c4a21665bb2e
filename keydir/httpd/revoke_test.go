package httpd

import (
	"bytes"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/keydir/wkd"
	"github.com/sealgate/sealgate/pgp"
)

// revocationCert makes a revocation certificate for e with go-crypto, in
// the shape gpg --gen-revoke writes: one signature packet in a public key
// armor block.
func revocationCert(t *testing.T, e *openpgp.Entity) []byte {
	t.Helper()
	if err := e.RevokeKey(packet.KeyCompromised, "laptop stolen", nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.Revocations[len(e.Revocations)-1].Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return armored(t, "PGP PUBLIC KEY BLOCK", buf.Bytes())
}

// checkRevokedEverywhere checks that the stored key no longer passes the
// gateway's encryption check and that WKD and VKS serve it revoked.
func checkRevokedEverywhere(t *testing.T, d *testDir, fpr, local string) {
	t.Helper()
	k, err := d.store.Store.Get(t.Context(), fpr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := readStoredCert(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckEncryption(time.Now()); err == nil {
		t.Error("the gateway would still encrypt to the revoked key")
	}
	resp, body := d.do("GET", advancedPath+wkd.Hash(local), "openpgpkey.example.org", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("WKD after revocation: %d", resp.StatusCode)
	}
	if el := readKeyRing(t, body); len(el) != 1 || !el[0].Revoked(time.Now()) {
		t.Error("WKD does not serve the key as revoked")
	}
	resp, body = d.do("GET", "/vks/v1/by-fingerprint/"+fpr, "", nil, nil)
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(body))
	if resp.StatusCode != 200 || err != nil || len(el) != 1 || !el[0].Revoked(time.Now()) {
		t.Errorf("VKS does not serve the key as revoked (%d, %v)", resp.StatusCode, err)
	}
}

func TestAdminRevoke(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	tk := d.tokens()
	e := entity(t, "alice@example.org")
	d.publish(e)
	fpr := fingerprint(e)
	rev := revocationCert(t, e)
	// Served once before the revocation, so the answer is cached: the
	// revocation must still show at once.
	resp, body := d.do("GET", advancedPath+wkd.Hash("alice"), "openpgpkey.example.org", nil, nil)
	if el := readKeyRing(t, body); resp.StatusCode != 200 || len(el) != 1 || el[0].Revoked(time.Now()) {
		t.Fatalf("WKD before the revocation: %d", resp.StatusCode)
	}

	resp, v := d.api("POST", "/api/v1/keys/"+fpr+"/revoke", tk.write, rev)
	if resp.StatusCode != 200 || v["usable"] != false || v["fingerprint"] != fpr {
		t.Fatalf("revoke: %d %v", resp.StatusCode, v)
	}
	checkRevokedEverywhere(t, d, fpr, "alice")
	_, v = d.api("GET", "/api/v1/history?address=alice@example.org", tk.read, nil)
	events, _ := v["events"].([]any)
	if len(events) != 2 || events[1].(map[string]any)["action"] != keydir.ActionRevoke ||
		events[1].(map[string]any)["actor"] != "token:"+tk.writeID {
		t.Errorf("history: %v", v)
	}
	// Sending it again changes nothing but succeeds.
	before := mustStoredData(t, d, fpr)
	if resp, _ := d.api("POST", "/api/v1/keys/"+fpr+"/revoke", tk.write, rev); resp.StatusCode != 200 {
		t.Errorf("second revoke: %d", resp.StatusCode)
	}
	if !bytes.Equal(before, mustStoredData(t, d, fpr)) {
		t.Error("a repeated revocation was added twice")
	}
}

func TestAdminRevokeRefusals(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	tk := d.tokens()
	e := entity(t, "alice@example.org")
	d.publish(e)
	fpr := fingerprint(e)
	before := mustStoredData(t, d, fpr)
	other := entity(t, "mallory@example.org")

	// A revocation made by another key does not verify against alice's
	// primary key.
	forged := revocationCert(t, other)
	for name, body := range map[string][]byte{
		"another key's revocation": forged,
		"garbage":                  []byte("revoke please\n"),
		"empty":                    {},
		"the public key only":      publicKey(t, e),
		"a secret key":             armored(t, "PGP PRIVATE KEY BLOCK", secretKey(t, e)),
	} {
		resp, v := d.api("POST", "/api/v1/keys/"+fpr+"/revoke", tk.write, body)
		if resp.StatusCode != 422 || v["error"] == nil {
			t.Errorf("%s: %d %v, want 422", name, resp.StatusCode, v)
		}
	}
	if !bytes.Equal(before, mustStoredData(t, d, fpr)) {
		t.Error("the stored key changed")
	}
	if resp, _ := d.api("POST", "/api/v1/keys/"+fingerprint(other)+"/revoke", tk.write, forged); resp.StatusCode != 404 {
		t.Errorf("revoking a key not in the directory: %d, want 404", resp.StatusCode)
	}
}

// A revoked key exported whole (as gpg --export does after importing the
// revocation) is accepted as the revocation certificate too, and GnuPG's
// ':'-protected auto-generated form.
func TestReadRevocationsForms(t *testing.T) {
	e := entity(t, "alice@example.org")
	rev := revocationCert(t, e)
	whole := armored(t, "PGP PUBLIC KEY BLOCK", publicKey(t, e))
	protected := append([]byte("To avoid an accidental use of this file, a colon has been inserted\nbefore the 5 dashes below.\n\n:"), rev...)
	for name, body := range map[string][]byte{"revocation": rev, "whole key": whole, "colon-protected": protected} {
		sigs, err := readRevocations(body)
		if err != nil || len(sigs) != 1 {
			t.Errorf("%s: %d signatures, %v", name, len(sigs), err)
			continue
		}
		cert := &pgp.Cert{Entity: entity(t, "alice@example.org")} // a different key
		if err := applyRevocations(cert, sigs); err == nil {
			t.Errorf("%s: applied to a key that did not make it", name)
		}
	}
}
