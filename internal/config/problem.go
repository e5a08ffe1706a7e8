package config

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a config file: where it is and what is wrong.
type Problem struct {
	// File is the path of the file as given to Load ("" for in-memory input).
	File string `json:"file,omitempty"`
	// Line is the 1-based line of the offending key or value (0 when unknown).
	Line int `json:"line,omitempty"`
	// Path is the dotted key path, e.g. "vms.vm1.memory" or "network.allow[0].to".
	Path string `json:"path,omitempty"`
	// Message says what is wrong, in words a user can act on.
	Message string `json:"message"`
}

// String renders the problem as "file:line: path: message", leaving out the
// parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		b.WriteString(": ")
	} else if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in a file. It is returned as an error by
// Load and Parse when the file cannot be applied.
type Problems []Problem

// Error lists the problems one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortProblems orders problems by line, then path, then message, so output is
// stable whatever order the checks ran in.
func sortProblems(ps Problems) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Line != b.Line {
			// Problems without a line go last.
			if a.Line == 0 || b.Line == 0 {
				return b.Line == 0 && a.Line != 0
			}
			return a.Line < b.Line
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Message < b.Message
	})
}

// maxProblems bounds how many problems one file reports; a hostile or badly
// broken file would otherwise produce an unbounded list.
const maxProblems = 200

// reporter collects problems and knows the line of every key path decoded.
type reporter struct {
	file     string
	lines    map[string]int
	problems Problems
	dropped  int
}

// add records p unless the list is full.
func (r *reporter) add(p Problem) {
	if len(r.problems) >= maxProblems {
		r.dropped++
		return
	}
	r.problems = append(r.problems, p)
}

// result returns the sorted problems, with a last line counting those left out.
func (r *reporter) result(ps Problems) Problems {
	sortProblems(ps)
	if r.dropped > 0 {
		ps = append(ps, Problem{File: r.file, Message: fmt.Sprintf("%d more problem(s) not shown; fix the ones above first", r.dropped)})
	}
	return ps
}

func newReporter(file string) *reporter {
	return &reporter{file: file, lines: map[string]int{}}
}

// addf records a problem at path; its line is that of the path or of its
// nearest ancestor that was seen in the file.
func (r *reporter) addf(path, format string, args ...any) {
	r.add(Problem{
		File:    r.file,
		Line:    r.lineOf(path),
		Path:    path,
		Message: fmt.Sprintf(format, args...),
	})
}

// addAt records a problem at an explicit line.
func (r *reporter) addAt(line int, path, format string, args ...any) {
	r.add(Problem{File: r.file, Line: line, Path: path, Message: fmt.Sprintf(format, args...)})
}

func (r *reporter) lineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := r.lines[p]; ok {
			return l
		}
	}
	return 0
}

// parentPath strips the last component of a dotted/indexed key path.
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func indexPath(parent string, i int) string {
	return fmt.Sprintf("%s[%d]", parent, i)
}
