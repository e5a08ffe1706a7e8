package kubelet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"filippo.io/age"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/secrets"
)

// SecretGetter reads a Secret from the API server (a kubelet's view of a
// pod's imagePullSecrets).
type SecretGetter func(ctx context.Context, namespace, name string) (*corev1.Secret, error)

// pullLogins are the registry logins of the pod's imagePullSecrets, by
// registry host, each password encrypted with age to the host daemon's
// recipients: they reach the daemon as the VM's registries and are never
// written anywhere in the clear. As a kubelet does, a secret that cannot
// be read or used is a warning (the pull may still work without it), not
// a failure of the pod.
func (p *Provider) pullLogins(ctx context.Context, k *corev1.Pod) (map[string]config.RegistryAuth, []string) {
	if len(k.Spec.ImagePullSecrets) == 0 || p.opts.Secrets == nil {
		return nil, nil
	}
	var r apitypes.Recipients
	if err := p.opts.Daemon.DoContext(ctx, "GET", "/v1/host/recipients", nil, &r); err != nil {
		return nil, []string{fmt.Sprintf("the host's age recipients: %v", err)}
	}
	var to []age.Recipient
	for _, s := range r.Recipients {
		rec, err := secrets.ParseRecipient(s)
		if err != nil {
			return nil, []string{fmt.Sprintf("the host's age recipient %q: %v", s, err)}
		}
		to = append(to, rec)
	}
	if len(to) == 0 {
		return nil, []string{"the host's daemon has no age identity to encrypt the pull secrets to (give it one with --age-identity)"}
	}
	logins := map[string]config.RegistryAuth{}
	var warnings []string
	for _, ref := range k.Spec.ImagePullSecrets {
		s, err := p.opts.Secrets(ctx, k.Namespace, ref.Name)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("imagePullSecret %q: %v", ref.Name, err))
			continue
		}
		found, err := dockerLogins(s)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("imagePullSecret %q: %v", ref.Name, err))
			continue
		}
		for host, l := range found {
			if _, ok := logins[host]; ok {
				continue // the first secret naming a registry wins
			}
			pw, err := secrets.Encrypt([]byte(l.password), to...)
			if err != nil {
				return nil, append(warnings, fmt.Sprintf("imagePullSecret %q: encrypt: %v", ref.Name, err))
			}
			logins[host] = config.RegistryAuth{Username: l.username, Password: pw}
		}
	}
	return logins, warnings
}

type login struct{ username, password string }

// dockerLogins reads a kubernetes.io/dockerconfigjson (or the older
// kubernetes.io/dockercfg) secret: its logins by registry host, as the
// docker config file writes them (username and password, or auth:
// base64 "user:password"), each host normalized to the registry name an
// image reference gives (a scheme, path and Docker Hub's v1 URL dropped).
func dockerLogins(s *corev1.Secret) (map[string]login, error) {
	var auths map[string]struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	switch s.Type {
	case corev1.SecretTypeDockerConfigJson:
		var f struct {
			Auths json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &f); err != nil {
			return nil, fmt.Errorf("%s is not a docker config: %w", corev1.DockerConfigJsonKey, err)
		}
		if err := json.Unmarshal(f.Auths, &auths); err != nil {
			return nil, fmt.Errorf("%s has no auths: %w", corev1.DockerConfigJsonKey, err)
		}
	case corev1.SecretTypeDockercfg:
		if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &auths); err != nil {
			return nil, fmt.Errorf("%s is not a docker config: %w", corev1.DockerConfigKey, err)
		}
	default:
		return nil, fmt.Errorf("type %s is not a pull secret (want %s)", s.Type, corev1.SecretTypeDockerConfigJson)
	}
	out := map[string]login{}
	keys := make([]string, 0, len(auths))
	for k := range auths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad []string
	for _, k := range keys {
		a := auths[k]
		l := login{username: a.Username, password: a.Password}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pw, ok := strings.Cut(string(dec), ":")
			if err != nil || !ok {
				bad = append(bad, k+": auth is not base64 user:password")
				continue
			}
			l = login{username: user, password: pw}
		}
		host, err := registryHost(k)
		if err != nil || l.username == "" {
			bad = append(bad, fmt.Sprintf("%s: not a registry with a username (%v)", k, err))
			continue
		}
		out[host] = l
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no usable login: %s", strings.Join(append(bad, "none given"), "; "))
	}
	return out, nil
}

// registryHost is the registry name of a docker config key
// ("https://index.docker.io/v1/", "registry.example:5000").
func registryHost(key string) (string, error) {
	h := key
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	h, _, _ = strings.Cut(h, "/")
	if h == "" {
		return "", errors.New("empty")
	}
	r, err := name.NewRegistry(h, name.StrictValidation)
	if err != nil {
		return "", err
	}
	return r.RegistryStr(), nil
}
