package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// errRefused marks a connection failure that a retry cannot mend (an
// unknown or changed host key, a rejected key).
var errRefused = errors.New("refused")

// sshConfig reads the private key and the known_hosts file (credentials
// sftp-key and sftp-known-hosts, see readCredential). The host key is
// always checked: there is no trust on first use.
func (d *sftpDest) sshConfig() (*ssh.ClientConfig, error) {
	keyPEM, err := readCredential("sftp-key", d.keyFile)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		// The parser's message never holds key material.
		return nil, fmt.Errorf("credential sftp-key: %w", err)
	}
	check, err := knownHostsCallback(d.knownHosts)
	if err != nil {
		return nil, err
	}
	return &ssh.ClientConfig{
		User:              d.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   check,
		HostKeyAlgorithms: hostKeyAlgorithms(check, d.addr),
		Timeout:           sftpDialTimeout,
	}, nil
}

// knownHostsCallback parses the known_hosts credential (knownhosts reads
// files by name: the credential's file, no copy of it).
func knownHostsCallback(fallback string) (ssh.HostKeyCallback, error) {
	p := credentialFile("sftp-known-hosts", fallback)
	if p == "" {
		return nil, errors.New("credential sftp-known-hosts: no file given")
	}
	cb, err := knownhosts.New(p)
	if err != nil {
		return nil, fmt.Errorf("credential sftp-known-hosts: %w", err)
	}
	return cb, nil
}

// hostKeyAlgorithms lists the algorithms of the keys known_hosts holds
// for addr, so the server is asked for a key that can be checked (not an
// ECDSA key when only its Ed25519 key is known). nil: the defaults.
func hostKeyAlgorithms(check ssh.HostKeyCallback, addr string) []string {
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if err := check(addr, tcp, probeKey{}); !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		default:
			algos = append(algos, t)
		}
	}
	return algos
}

// probeKey is a key no known_hosts holds: checking it reveals the known
// keys of a host (knownhosts.KeyError.Want).
type probeKey struct{}

func (probeKey) Type() string                        { return "backupgen-probe" }
func (probeKey) Marshal() []byte                     { return []byte("backupgen-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// dialSSH connects and authenticates within sftpDialTimeout (the TCP
// connect and the handshake both), or until ctx ends.
func dialSSH(ctx context.Context, addr string, cc *ssh.ClientConfig) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, sftpDialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(raw, addr, cc)
	stop()
	if err != nil {
		raw.Close()
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) || isAuthError(err) {
			return nil, fmt.Errorf("%w: %w", errRefused, err)
		}
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// isAuthError: the server rejected every key offered.
func isAuthError(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "unable to authenticate") ||
		strings.Contains(err.Error(), "no supported methods remain"))
}
