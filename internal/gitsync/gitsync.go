// Package gitsync keeps a local mirror of the fleet's git repository with
// go-git: it force-fetches the tracked branch (a rewritten history is
// followed, never merged), reads the config file at a commit, and checks a
// commit's signature against OpenPGP keys or SSH allowed signers.
// Credentials come from a token file (HTTPS) or an SSH key and are never
// logged or put on a command line.
package gitsync

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"microvm.dev/microvm/internal/apitypes"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
)

// Options say what to mirror and how to authenticate.
type Options struct {
	// URL is the remote (https://, ssh://, git@host:path or a local path).
	URL string
	// Branch is the branch deployed (default main).
	Branch string
	// Dir is the local bare mirror.
	Dir string
	// TokenFile holds an HTTPS access token (sent as the password).
	TokenFile string
	// SSHKeyFile is a private key for ssh:// remotes, who log in as the
	// URL's user (git when it names none).
	SSHKeyFile string
	// KnownHostsFile holds the remote's SSH host key (known_hosts
	// format); unset: ~/.ssh/known_hosts or $SSH_KNOWN_HOSTS.
	KnownHostsFile string
}

// Commit is the facts of one commit a deploy records.
type Commit = apitypes.Commit

// Mirror is the local mirror of one branch.
type Mirror struct {
	o    Options
	repo *git.Repository
}

// Open opens the mirror in o.Dir, creating it (bare) on first use.
func Open(o Options) (*Mirror, error) {
	if o.URL == "" {
		return nil, errors.New("git: no URL")
	}
	if o.Branch == "" {
		o.Branch = "main"
	}
	repo, err := git.PlainOpen(o.Dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if repo, err = git.PlainInit(o.Dir, true); err == nil {
			_, err = repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{o.URL}})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("git mirror %s: %w", o.Dir, err)
	}
	// The URL may have changed since the mirror was made.
	if rc, err := repo.Remote("origin"); err == nil && (len(rc.Config().URLs) == 0 || rc.Config().URLs[0] != o.URL) {
		repo.DeleteRemote("origin")
		if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{o.URL}}); err != nil {
			return nil, fmt.Errorf("git mirror %s: %w", o.Dir, err)
		}
	}
	return &Mirror{o: o, repo: repo}, nil
}

func (m *Mirror) auth() (transport.AuthMethod, error) {
	switch {
	case m.o.TokenFile != "":
		b, err := os.ReadFile(m.o.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("git token: %w", err)
		}
		return &githttp.BasicAuth{Username: "microvm", Password: strings.TrimSpace(string(b))}, nil
	case m.o.SSHKeyFile != "":
		k, err := gitssh.NewPublicKeysFromFile(SSHUser(m.o.URL), m.o.SSHKeyFile, "")
		if err != nil {
			return nil, fmt.Errorf("git ssh key %s: %w", m.o.SSHKeyFile, err)
		}
		if m.o.KnownHostsFile != "" {
			if k.HostKeyCallback, err = gitssh.NewKnownHostsCallback(m.o.KnownHostsFile); err != nil {
				return nil, fmt.Errorf("git known hosts %s: %w", m.o.KnownHostsFile, err)
			}
		}
		return k, nil
	}
	return nil, nil
}

// SSHUser is the user an SSH remote's URL logs in as: its own
// (ssh://deploy@host/…, deploy@host:path), or git.
func SSHUser(url string) string {
	if ep, err := transport.NewEndpoint(url); err == nil && ep.User != "" {
		return ep.User
	}
	return "git"
}

// HostKnown says whether the known hosts file lists a key for the SSH
// remote url's host (and port), and which host it looked for.
func HostKnown(knownHosts, url string) (bool, string, error) {
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return false, "", err
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	host := net.JoinHostPort(ep.Host, strconv.Itoa(port))
	cb, err := knownhosts.New(knownHosts)
	if err != nil {
		return false, host, err
	}
	// A key no file holds: the callback says whether the host has others.
	_, probe, _ := ed25519.GenerateKey(nil)
	signer, err := ssh.NewSignerFromKey(probe)
	if err != nil {
		return false, host, err
	}
	ip := net.ParseIP(ep.Host)
	if ip == nil {
		ip = net.IPv4zero // a name: its entries are looked up by the name alone
	}
	err = cb(host, &net.TCPAddr{IP: ip, Port: port}, signer.PublicKey())
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return len(ke.Want) > 0, host, nil
	}
	return err == nil, host, err
}

func (m *Mirror) remoteRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName("origin", m.o.Branch)
}

// Fetch force-fetches the branch and returns its head. A branch whose
// history was rewritten is followed to its new head.
func (m *Mirror) Fetch(ctx context.Context) (Commit, error) {
	auth, err := m.auth()
	if err != nil {
		return Commit{}, err
	}
	spec := gitconfig.RefSpec(fmt.Sprintf("+refs/heads/%s:%s", m.o.Branch, m.remoteRef()))
	err = m.repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []gitconfig.RefSpec{spec}, Auth: auth, Force: true, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return Commit{}, fmt.Errorf("git fetch %s %s: %w", redact(m.o.URL), m.o.Branch, err)
	}
	ref, err := m.repo.Reference(m.remoteRef(), true)
	if err != nil {
		return Commit{}, fmt.Errorf("git: branch %s: %w", m.o.Branch, err)
	}
	return m.Commit(ref.Hash().String())
}

// Commit describes the commit hash.
func (m *Mirror) Commit(hash string) (Commit, error) {
	c, err := m.repo.CommitObject(plumbing.NewHash(hash))
	if err != nil {
		return Commit{}, fmt.Errorf("git: commit %s: %w", hash, err)
	}
	return Commit{Hash: c.Hash.String(), Message: strings.TrimSpace(c.Message), Author: c.Author.Name + " <" + c.Author.Email + ">",
		Time: c.Author.When.UTC(), Signed: c.PGPSignature != ""}, nil
}

// ReadFile returns the file at path in commit hash.
func (m *Mirror) ReadFile(hash, path string) ([]byte, error) {
	c, err := m.repo.CommitObject(plumbing.NewHash(hash))
	if err != nil {
		return nil, fmt.Errorf("git: commit %s: %w", hash, err)
	}
	f, err := c.File(strings.TrimPrefix(path, "/"))
	if err != nil {
		return nil, fmt.Errorf("git: %s at %s: %w", path, short(hash), err)
	}
	s, err := f.Contents()
	if err != nil {
		return nil, fmt.Errorf("git: %s at %s: %w", path, short(hash), err)
	}
	return []byte(s), nil
}

// commitObject is for Verify.
func (m *Mirror) commitObject(hash string) (*object.Commit, error) {
	return m.repo.CommitObject(plumbing.NewHash(hash))
}

// redact drops credentials from a URL before it is shown.
func redact(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.LastIndex(u[i+3:], "@"); j >= 0 && !strings.HasPrefix(u, "ssh://") {
			return u[:i+3] + "***@" + u[i+3+j+1:]
		}
	}
	return u
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
