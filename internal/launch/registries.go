package launch

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/secrets"
)

// RegistryLogins is a keychain of the file's host.registries: the login
// of the registry a pull goes to, its password decrypted with the host's
// identities only then. Registries it does not name get no login from it
// (the docker config file's come next). nil when there are none.
func RegistryLogins(regs map[string]config.RegistryAuth, ids []secrets.Identity) authn.Keychain {
	if len(regs) == 0 {
		return nil
	}
	return registryLogins{regs: regs, ids: ids}
}

type registryLogins struct {
	regs map[string]config.RegistryAuth
	ids  []secrets.Identity
}

// Resolve returns the login for r's registry, or anonymous.
func (k registryLogins) Resolve(r authn.Resource) (authn.Authenticator, error) {
	for host, a := range k.regs {
		reg, err := name.NewRegistry(host)
		if err != nil || reg.RegistryStr() != r.RegistryStr() {
			continue
		}
		pw, err := secrets.Decrypt(a.Password, k.ids)
		if err != nil {
			return nil, fmt.Errorf("host.registries[%q].password: %w", host, err)
		}
		return &authn.Basic{Username: a.Username, Password: strings.TrimRight(string(pw), "\r\n")}, nil
	}
	return authn.Anonymous, nil
}
