package testutil

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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
	line := strings.Join(c.Words, " ")
	cmd, verbs := root, true
	for i := 0; i < len(args); i++ {
		w := strings.Trim(args[i], "[]")
		switch {
		case w == "--":
			return // what follows goes to the guest or to ssh
		case w == "" || w == "-":
		case strings.HasPrefix(w, "-"):
			f := lookupFlag(cmd, w)
			if f == nil {
				if !strings.ContainsAny(w, "…<>") {
					t.Errorf("%s: %q: %s takes no flag %s", c.Where, line, cmd.CommandPath(), w)
				}
				continue
			}
			if !strings.Contains(w, "=") && f.Value.Type() != "bool" && !strings.HasPrefix(w, "-"+f.Shorthand+"=") {
				i++ // its value
			}
		case verbs:
			// A verb, or each of "a|b" alternatives; else an argument, and
			// no verb follows.
			var next *cobra.Command
			for _, a := range strings.Split(w, "|") {
				if next = findSub(cmd, a); next == nil {
					break
				}
			}
			if next != nil {
				cmd = next
				continue
			}
			if cmd == root {
				t.Errorf("%s: %q: no verb %q", c.Where, line, w)
				return
			}
			verbs = false
		}
	}
}

// lookupFlag is the flag w ("--name", "--name=value", "-x") of cmd or
// one it inherits; nil when there is none.
func lookupFlag(cmd *cobra.Command, w string) *pflag.Flag {
	if name, ok := strings.CutPrefix(w, "--"); ok {
		name, _, _ = strings.Cut(name, "=")
		for _, fs := range []*pflag.FlagSet{cmd.Flags(), cmd.PersistentFlags(), cmd.InheritedFlags()} {
			if f := fs.Lookup(name); f != nil {
				return f
			}
		}
		return nil
	}
	short := strings.TrimPrefix(w, "-")
	if short == "" {
		return nil
	}
	var last *pflag.Flag
	for _, r := range short {
		f := cmd.Flags().ShorthandLookup(string(r))
		if f == nil {
			f = cmd.PersistentFlags().ShorthandLookup(string(r))
		}
		if f == nil {
			f = cmd.InheritedFlags().ShorthandLookup(string(r))
		}
		if f == nil {
			return nil
		}
		last = f
	}
	return last
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
