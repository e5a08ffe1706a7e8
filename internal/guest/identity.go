package guest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// IdentityDiskSize is the size of a template's or clone's identity disk.
const IdentityDiskSize = 64 << 10

// identityMagic starts an identity disk.
var identityMagic = []byte("MVMIDENT")

// Identity is what a clone of a template is, as the host writes it on the
// clone's identity disk: the template's guest, paused and saved while
// reading its own disk, finds this one changed when it resumes as the clone
// and takes it on before its workload runs again. A template's disk holds
// only its Generation.
type Identity struct {
	// Generation is new for every disk written: the guest acts on a change.
	Generation string `json:"generation"`
	// Name is the clone's name (its hostname); empty on a template's disk.
	Name string `json:"name,omitempty"`
	// Net is the clone's network (its MAC, addresses, routes, resolvers).
	Net NetSpec `json:"net"`
	// HostKey is the clone's SSH host key (OpenSSH PEM), AuthorizedKeys
	// who may log in.
	HostKey        string   `json:"hostKey,omitempty"`
	AuthorizedKeys []string `json:"authorizedKeys,omitempty"`
	// MachineID is the clone's /etc/machine-id.
	MachineID string `json:"machineID,omitempty"`
	// Seed is fresh randomness the guest's kernel pool is reseeded with.
	Seed []byte `json:"seed,omitempty"`
	// Secrets are the clone's own secret files, written into its root
	// before its workload runs again (the template's are in its memory).
	Secrets []SecretFile `json:"secrets,omitempty"`
	// ClockNS is the host's time (Unix nanoseconds) when the disk was
	// written: the guest's clock stood still while it was saved.
	ClockNS int64 `json:"clockNS,omitempty"`
}

// EncodeIdentity is the identity disk holding id: the magic, the JSON's
// length and the JSON, padded with zeros to IdentityDiskSize.
func EncodeIdentity(id Identity) ([]byte, error) {
	js, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	n := len(identityMagic) + 4 + len(js)
	if n > IdentityDiskSize {
		return nil, fmt.Errorf("identity of %s is %d bytes, over the disk's %d", id.Name, n, IdentityDiskSize)
	}
	b := make([]byte, IdentityDiskSize)
	copy(b, identityMagic)
	binary.BigEndian.PutUint32(b[len(identityMagic):], uint32(len(js)))
	copy(b[len(identityMagic)+4:], js)
	return b, nil
}

// DecodeIdentity reads an identity disk's content.
func DecodeIdentity(b []byte) (Identity, error) {
	var id Identity
	h := len(identityMagic) + 4
	if len(b) < h || !bytes.Equal(b[:len(identityMagic)], identityMagic) {
		return id, errors.New("not an identity disk")
	}
	n := int(binary.BigEndian.Uint32(b[len(identityMagic):]))
	if n > len(b)-h {
		return id, fmt.Errorf("identity disk: %d bytes of JSON announced, %d there", n, len(b)-h)
	}
	if err := json.Unmarshal(b[h:h+n], &id); err != nil {
		return id, fmt.Errorf("identity disk: %w", err)
	}
	if id.Generation == "" {
		return id, errors.New("identity disk: no generation")
	}
	return id, nil
}
