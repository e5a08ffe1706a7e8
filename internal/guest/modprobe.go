package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNoModule says a module (or alias) is in none of the kernel's indexes.
var ErrNoModule = errors.New("module not found")

// ModprobePlan is what modprobe would load for name (a module name, or an
// alias such as the kernel asks for: rtnl-link-wireguard, fs-xfs,
// net-pf-38) from the module tree dir (depmod's modules.dep, .alias,
// .softdep and .builtin): the module files, absolute, each after what it
// needs (its dependencies and its softdeps' pre: modules; post: ones
// after it). A built-in module needs nothing (nil, nil). A name nothing
// matches is ErrNoModule, with the directory, as modprobe says it.
//
// microvm-init is the kernel's modprobe when the image's own init does not
// run (init: microvm); this is the resolution it loads by.
func ModprobePlan(dir, name string) ([]string, error) {
	ix, err := readIndex(dir)
	if err != nil {
		return nil, err
	}
	r := &modResolver{moduleIndex: ix, walk: depsFirst{deps: ix.deps}}
	mods, isBuiltin, err := r.resolve(name)
	switch {
	case err != nil:
		return nil, err
	case isBuiltin:
		return nil, nil
	case len(mods) == 0:
		return nil, fmt.Errorf("%w: %s in %s", ErrNoModule, name, dir)
	}
	r.pre, r.post = readSoftdeps(filepath.Join(dir, "modules.softdep"))
	for _, m := range mods {
		if err := r.visitName(m); err != nil {
			return nil, err
		}
	}
	files := make([]string, len(r.walk.out))
	for i, f := range r.walk.out {
		files[i] = filepath.Join(dir, f)
	}
	return files, nil
}

// modResolver is one ModprobePlan: the tree's indexes and what it chose.
type modResolver struct {
	*moduleIndex
	aliases   [][2]string // pattern, module; read on first use
	pre, post map[string][]string
	walk      depsFirst
}

// resolve turns a name or alias into module names; a built-in one is
// reported as such.
func (r *modResolver) resolve(name string) (mods []string, builtin bool, err error) {
	n := strings.ReplaceAll(name, "-", "_")
	switch {
	case r.byName[n] != "":
		return []string{n}, false, nil
	case r.builtin[n]:
		return nil, true, nil
	}
	if r.aliases == nil {
		if r.aliases, err = readAliases(filepath.Join(r.dir, "modules.alias")); err != nil {
			return nil, false, err
		}
	}
	for _, a := range r.aliases {
		if ok, _ := path.Match(a[0], name); (ok || a[0] == name) && !slices.Contains(mods, a[1]) {
			mods = append(mods, a[1])
		}
	}
	if len(mods) == 0 && aliasBuiltin(filepath.Join(r.dir, "modules.builtin.modinfo"), name) {
		return nil, true, nil
	}
	return mods, false, nil
}

// visitName adds module n after its pre: softdeps and before its post:
// ones (softdeps may be aliases, such as crypto-crc32c; one that matches
// nothing is skipped, as modprobe does).
func (r *modResolver) visitName(n string) error {
	p := r.byName[n]
	if p == "" || r.walk.seen[p] {
		return nil // built in, or already chosen
	}
	soft := func(list []string) error {
		for _, s := range list {
			mods, _, err := r.resolve(s)
			if err != nil {
				return err
			}
			for _, m := range mods {
				if err := r.visitName(m); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := soft(r.pre[n]); err != nil {
		return err
	}
	r.walk.add(p)
	return soft(r.post[n])
}

// readAliases reads file's "alias PATTERN MODULE" lines.
func readAliases(file string) ([][2]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	defer f.Close()
	out := [][2]string{}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) == 3 && f[0] == "alias" {
			out = append(out, [2]string{f[1], strings.ReplaceAll(f[2], "-", "_")})
		}
	}
	return out, s.Err()
}

// aliasBuiltin says whether an alias of a built-in module matches name
// (modules.builtin.modinfo: "module.alias=PATTERN" records, NUL-separated).
func aliasBuiltin(file, name string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	for _, rec := range strings.Split(string(b), "\x00") {
		_, kv, ok := strings.Cut(rec, ".")
		if pat, isAlias := strings.CutPrefix(kv, "alias="); ok && isAlias {
			if m, _ := path.Match(pat, name); m || pat == name {
				return true
			}
		}
	}
	return false
}

// readSoftdeps reads "softdep MOD pre: A B post: C" lines.
func readSoftdeps(file string) (pre, post map[string][]string) {
	pre, post = map[string][]string{}, map[string][]string{}
	f, err := os.Open(file)
	if err != nil {
		return pre, post
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		mod := strings.ReplaceAll(f[1], "-", "_")
		var into map[string][]string
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				into = pre
			case "post:":
				into = post
			default:
				if into != nil {
					into[mod] = append(into[mod], w)
				}
			}
		}
	}
	return pre, post
}
