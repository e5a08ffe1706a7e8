package store

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Resolve asks ref's registry which image ref names now, without pulling
// it: the repository and the digest of the platform's image (of an index,
// the manifest a pull would install), as a pull records it in Source.
func Resolve(ctx context.Context, ref string, o Options) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", ref, err)
	}
	desc, err := remote.Get(r, remoteOptions(ctx, o)...)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	return r.Context().Name() + "@" + digest.String(), nil
}
