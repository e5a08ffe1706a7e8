package config

import (
	"regexp"
	"sort"

	"microvm.dev/microvm/internal/secrets"
)

// envNameRE is an environment variable's name.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// backup checks snapshots.backup at p: a repository, an age-encrypted
// password, a retention that is not negative, and age-encrypted values in
// env.
func (v *validator) backup(p string, b *Backup) {
	if b == nil {
		return
	}
	if b.Repository == "" {
		v.r.addf(joinPath(p, "repository"), "a backup needs a restic repository (a path, sftp:…, s3:…, rest:…)")
	}
	if err := secrets.Check(b.Password); err != nil {
		v.r.addf(joinPath(p, "password"), "the repository's password must be age-encrypted (microvm secret encrypt): %v", err)
	}
	if b.Keep < 0 {
		v.r.addf(joinPath(p, "keep"), "keep %d is negative", b.Keep)
	}
	names := make([]string, 0, len(b.Env))
	for k := range b.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		ep := joinPath(joinPath(p, "env"), k)
		if !envNameRE.MatchString(k) {
			v.r.addf(ep, "%q is not an environment variable's name", k)
		}
		if err := secrets.Check(b.Env[k]); err != nil {
			v.r.addf(ep, "the value must be age-encrypted (microvm secret encrypt): %v", err)
		}
	}
}
