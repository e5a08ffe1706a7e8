package kubelet

import (
	"encoding/base64"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Pull secrets are read as a kubelet reads them: both docker config
// formats, username and password or auth, the keys docker writes
// normalized to the registry an image reference names.
func TestDockerLogins(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("u2:p:with:colons"))
	for _, c := range []struct {
		name   string
		secret *corev1.Secret
		want   map[string]login
		err    string
	}{
		{"dockerconfigjson", &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"https://index.docker.io/v1/":{"username":"u1","password":"p1"},"r.test:5000":{"auth":"` + auth + `"}}}`)}},
			map[string]login{"index.docker.io": {"u1", "p1"}, "r.test:5000": {"u2", "p:with:colons"}}, ""},
		{"dockercfg", &corev1.Secret{Type: corev1.SecretTypeDockercfg, Data: map[string][]byte{corev1.DockerConfigKey: []byte(
			`{"http://r.test":{"username":"u","password":"p"}}`)}},
			map[string]login{"r.test": {"u", "p"}}, ""},
		{"bad auth", &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"r.test":{"auth":"bm8tY29sb24="}}}`)}}, nil, "auth is not base64 user:password"},
		{"not json", &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{`)}}, nil, "is not a docker config"},
		{"opaque", &corev1.Secret{Type: corev1.SecretTypeOpaque}, nil, "is not a pull secret"},
	} {
		got, err := dockerLogins(c.secret)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want an error with %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
			continue
		}
		for host, l := range c.want {
			if got[host] != l {
				t.Errorf("%s: %s = %+v, want %+v", c.name, host, got[host], l)
			}
		}
	}
}
