package apiserver

import (
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/supervisor"
)

// Redacted is what the API says of a secret's value: never its ciphertext.
const Redacted = "(age-encrypted; not shown)"

// redact is st with its spec's secrets' values replaced by Redacted (the
// spec itself is shared with the supervisor, so it is copied).
func redact(st supervisor.Status) supervisor.Status {
	if st.Spec == nil || len(st.Spec.Secrets) == 0 {
		return st
	}
	spec := *st.Spec
	spec.Secrets = make([]config.Secret, len(st.Spec.Secrets))
	for i, s := range st.Spec.Secrets {
		s.Age = Redacted
		spec.Secrets[i] = s
	}
	st.Spec = &spec
	return st
}

// redactAll is redact of each status.
func redactAll(sts []supervisor.Status) []supervisor.Status {
	out := make([]supervisor.Status, len(sts))
	for i, st := range sts {
		out[i] = redact(st)
	}
	return out
}
