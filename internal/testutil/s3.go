package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// S3Cache is where S3Server's gateway binary is kept, one directory per
// version of the tools module.
const S3Cache = "/var/cache/microvm/s3"

// S3Packages are what S3Server builds of tools/s3.
func S3Packages() []string { return []string{"github.com/versity/versitygw/cmd/versitygw"} }

// S3 is an S3-compatible server the test started: Versity's gateway
// (versitygw) on loopback, its buckets directories under Dir.
type S3 struct {
	// Endpoint is the server's address, http://127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are its one account's credentials.
	AccessKey, SecretKey string
	// Dir holds one directory per bucket.
	Dir string
}

// StartS3 builds versitygw (tools/s3) once per version of that module,
// starts it on a free loopback port serving a new directory through its
// posix backend, and stops it when the test ends.
func StartS3(t *testing.T) *S3 {
	t.Helper()
	bin := filepath.Join(BuildTools(t, "s3", S3Cache, S3Packages()...), "versitygw")
	port := FreePort(t)
	s := &S3{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), AccessKey: "microvm-test", SecretKey: "a secret of the test's", Dir: t.TempDir()}
	cmd := exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--access", s.AccessKey, "--secret", s.SecretKey, "posix", s.Dir)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // none of the ROOT_* or VGW_* settings of the caller
	startServer(t, "versitygw", cmd, port)
	return s
}
