package config

import (
	"fmt"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"

	"microvm.dev/microvm/internal/secrets"
)

// RegistryAuth is how the host logs in to one registry to pull: a user
// name and its password (or token) encrypted with age to the hosts'
// identities, as a VM's secrets are, decrypted only on the host that
// pulls.
type RegistryAuth struct {
	// Username is the registry user (for a token, what the registry asks:
	// often the token's name, or "oauth2accesstoken").
	Username string `yaml:"username" json:"username"`
	// Password is the password or token, ASCII-armored age ciphertext
	// (microvm secret encrypt).
	Password string `yaml:"password" json:"password"`
}

// registries checks the logins at path at (host.registries, or a VM's
// registries): each key a registry host (with its port where it has
// one), a user and an age-encrypted password.
func (v *validator) registries(at string, regs map[string]RegistryAuth) {
	keys := make([]string, 0, len(regs))
	for k := range regs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := fmt.Sprintf("%s[%q]", at, k)
		if _, err := name.NewRegistry(k, name.StrictValidation); err != nil {
			v.r.addf(p, "%q is not a registry host (host or host:port, as in the image references): %v", k, err)
		}
		a := regs[k]
		if a.Username == "" {
			v.r.addf(joinPath(p, "username"), "a registry login needs a username")
		}
		if err := secrets.Check(a.Password); err != nil {
			v.r.addf(joinPath(p, "password"), "the password must be age-encrypted (microvm secret encrypt): %v", err)
		}
	}
}
