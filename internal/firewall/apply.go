package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"microvm.dev/microvm/internal/apitypes"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// Applier loads rulesets into one network namespace's nftables.
type Applier struct {
	// NetNS is the namespace path; "" is the process's own.
	NetNS string
}

// Loaded is what the namespace holds of microvm's table.
type Loaded = apitypes.FirewallLoaded

// Matches reports whether the loaded table l is rs: same marker, and the
// same number of rules in every chain (a rule added or deleted by hand is
// seen).
func (rs Ruleset) Matches(l *Loaded) bool {
	if !l.Present || l.Hash != rs.Hash {
		return false
	}
	want := ChainRules(rs.Body)
	if len(want) != len(l.ChainRules) {
		return false
	}
	for c, n := range want {
		if got, ok := l.ChainRules[c]; !ok || got != n {
			return false
		}
	}
	return true
}

// ErrNoNftables says the kernel or the host lacks nftables.
var ErrNoNftables = errors.New("nftables is not available")

// conn opens a netlink connection to the applier's namespace; the returned
// function closes it and the namespace handle it needs while open.
func (a *Applier) conn() (*nftables.Conn, func(), error) {
	if a.NetNS == "" {
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.CloseLasting() }, nil
	}
	ns, err := netns.GetFromPath(a.NetNS)
	if err != nil {
		return nil, nil, fmt.Errorf("open network namespace %s: %w", a.NetNS, err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		ns.Close()
		return nil, nil, err
	}
	return c, func() { c.CloseLasting(); ns.Close() }, nil
}

// Loaded reads microvm's table over netlink without spawning nft.
func (a *Applier) Loaded() (*Loaded, error) {
	c, closeConn, err := a.conn()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	defer closeConn()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("%w: the kernel did not answer an nftables request (is nf_tables loaded?): %v", ErrNoNftables, err)
	}
	l := &Loaded{ChainRules: map[string]int{}}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != Name {
			continue
		}
		l.Present = true
		if h, ok := strings.CutPrefix(ch.Name, MarkerPrefix); ok {
			l.Hash = h
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("nftables: list rules of chain %s: %w", ch.Name, err)
		}
		l.ChainRules[ch.Name] = len(rules)
	}
	if !l.Present {
		// A table with no chains still exists; ask for it directly.
		if t, err := c.ListTableOfFamily(Name, nftables.TableFamilyINet); err == nil && t != nil {
			l.Present = true
		}
	}
	if !l.Present {
		l.ChainRules = nil
	}
	return l, nil
}

// Apply loads rs unless it is already loaded, replacing the table in one
// transaction. It reports whether it changed anything.
func (a *Applier) Apply(rs Ruleset) (bool, error) {
	l, err := a.Loaded()
	if err != nil {
		return false, err
	}
	if rs.Matches(l) {
		return false, nil
	}
	if err := a.nft(rs.Script()); err != nil {
		return false, err
	}
	return true, nil
}

// Remove deletes microvm's table if present; nothing else is touched.
func (a *Applier) Remove() (bool, error) {
	l, err := a.Loaded()
	if err != nil {
		return false, err
	}
	if !l.Present {
		return false, nil
	}
	return true, a.nft(fmt.Sprintf("delete table %s %s\n", Family, Name))
}

// nft runs `nft -f -` on script in the applier's namespace.
func (a *Applier) nft(script string) error {
	bin, err := exec.LookPath("nft")
	if err != nil {
		return fmt.Errorf("%w: the nft command is not installed (install the nftables package)", ErrNoNftables)
	}
	argv := []string{bin, "-f", "-"}
	if a.NetNS != "" {
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return fmt.Errorf("nsenter is needed to run nft in %s: %w", a.NetNS, err)
		}
		argv = append([]string{nsenter, "--net=" + a.NetNS, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if strings.Contains(msg, "Protocol not supported") || strings.Contains(msg, "Operation not supported") {
			return fmt.Errorf("%w: the kernel refused the ruleset (%s)", ErrNoNftables, msg)
		}
		return fmt.Errorf("nft rejected the ruleset: %v: %s", err, msg)
	}
	return nil
}
