package testutil

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// DocCommand is one command line the docs show: where, and its words.
type DocCommand struct {
	Where string
	Words []string
}

// DocCommands are the command lines of program in README.md and
// docs/*.md (root is the checkout's root): in code spans, and lines of
// code blocks after any prompt, a line ending in a backslash joined with
// the next (a command ends at a shell operator or a comment).
func DocCommands(t testing.TB, root, program string) []DocCommand {
	t.Helper()
	inline := regexp.MustCompile("`(" + regexp.QuoteMeta(program) + " [^`]+)`")
	prompt := regexp.MustCompile(`^\s*(?:[$#]\s+)?(?:sudo\s+)?((?:bin/)?` + regexp.QuoteMeta(program) + `\s.*)$`)
	pages, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	pages = append(pages, filepath.Join(root, "README.md"))
	var out []DocCommand
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		inBlock := false
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			line := lines[i]
			where := filepath.Base(page) + ":" + strconv.Itoa(i+1)
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				inBlock = !inBlock
				continue
			}
			var found []string
			if inBlock {
				for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
					i++
					line = strings.TrimSuffix(line, "\\") + " " + lines[i]
				}
				if strings.ContainsAny(line, "─│┐┘└┌") {
					continue // a diagram, not a command
				}
				if m := prompt.FindStringSubmatch(line); m != nil {
					found = append(found, m[1])
				}
			} else {
				for _, m := range inline.FindAllStringSubmatch(line, -1) {
					found = append(found, m[1])
				}
			}
			for _, c := range found {
				out = append(out, DocCommand{where, words(c)})
			}
		}
	}
	return out
}

// words splits a command line as a shell would (quotes kept together),
// up to a shell operator or a comment.
func words(line string) []string {
	var out []string
	var cur strings.Builder
	quote := rune(0)
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote = r
		case r == ' ' || r == '\t':
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	for i, w := range out {
		if w == "&&" || w == "||" || w == "|" || w == ";" || w == "#" || strings.HasPrefix(w, ">") || w == "\\" {
			return out[:i]
		}
	}
	return out
}

// CheckDocCommand resolves c's verbs in root and checks its flags: the
// verbs must exist, and each flag must be the last verb's or a global
// one. Placeholders (VM, FILE, …), "[…]" around optional parts and "a|b"
// alternatives are read as the docs write them; words after "--" are
// the guest's or ssh's. skip, when it returns true for the first
// argument, leaves a command line unchecked.
func CheckDocCommand(t testing.TB, root *cobra.Command, c DocCommand, skip func(string) bool) {
	t.Helper()
	args := c.Words[1:]
	if len(args) > 0 && skip != nil && skip(args[0]) {
		return
	}
	cmd := root
	i := 0
	// Verbs: words before the first flag that name a subcommand (each of
	// "a|b" alternatives must).
	for ; i < len(args); i++ {
		w := strings.Trim(args[i], "[]")
		if strings.HasPrefix(w, "-") || w == "" {
			break
		}
		alts := strings.Split(w, "|")
		var next *cobra.Command
		for _, a := range alts {
			sub := findSub(cmd, a)
			if sub == nil {
				next = nil
				break
			}
			next = sub
		}
		if next == nil {
			break // an argument, not a verb
		}
		cmd = next
	}
	if cmd == root && len(args) > 0 && !strings.HasPrefix(strings.Trim(args[0], "[]"), "-") {
		t.Errorf("%s: %q: no verb %q", c.Where, strings.Join(c.Words, " "), args[0])
		return
	}
	for _, w := range args[i:] {
		w = strings.Trim(w, "[]")
		if w == "--" {
			return // what follows goes to the guest or to ssh
		}
		if !strings.HasPrefix(w, "-") || w == "-" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
		if name == "" || strings.ContainsAny(name, "…<>") {
			continue
		}
		var ok bool
		if strings.HasPrefix(w, "--") {
			ok = cmd.Flags().Lookup(name) != nil || cmd.InheritedFlags().Lookup(name) != nil
		} else {
			for _, r := range name {
				if cmd.Flags().ShorthandLookup(string(r)) == nil && cmd.InheritedFlags().ShorthandLookup(string(r)) == nil {
					ok = false
					break
				}
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s: %q: %s takes no flag %s", c.Where, strings.Join(c.Words, " "), cmd.CommandPath(), w)
		}
	}
}

// findSub is cmd's subcommand called name (or by an alias).
func findSub(cmd *cobra.Command, name string) *cobra.Command {
	for _, s := range cmd.Commands() {
		if s.Name() == name || s.HasAlias(name) {
			return s
		}
	}
	return nil
}
