package archtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const module = "github.com/thaw-dev/thaw"

// thaw names a package of this module by its path inside the module.
func thaw(rel string) string { return module + "/" + rel }

// pkg is the part of `go list -json` the rules read. Imports and Deps hold
// non-test imports only: what a package's tests import is free.
type pkg struct {
	ImportPath string
	Imports    []string // direct
	Deps       []string // transitive
	Error      *struct{ Err string }
}

// reach says which edges a rule looks at.
type reach int

const (
	direct     reach = iota // Imports: for upstream, whose API types pull in more than we import
	transitive              // Deps: a wing must not reach another one through the floor either
)

type rule struct {
	name   string
	from   []string // the rule applies to these packages and everything under them
	forbid []string // ...which must not import these packages or anything under them
	reach  reach
}

// floor is the shared floor both wings stand on.
var floor = []string{thaw("pkg/wire"), thaw("pkg/asconfig"), thaw("pkg/observability"), thaw("pkg/coldstart"),
	thaw("pkg/workloop"), thaw("pkg/faultinject"), thaw("pkg/cmwatch")}

// tools are the top-level packages that serve neither wing at run time:
// building release images and swapping them into an install.
var tools = []string{thaw("pkg/images"), thaw("pkg/swap")}

// rules are the import rules of docs/ARCHITECTURE.md ("Import rules").
var rules = []rule{
	{
		name:   "the activator wing stands on the floor only",
		from:   []string{thaw("pkg/activator")},
		forbid: []string{thaw("pkg/autoscaler"), thaw("pkg/lab"), thaw("pkg/experiment"), thaw("cmd")},
		reach:  transitive,
	},
	{
		name:   "the autoscaler wing stands on the floor only",
		from:   []string{thaw("pkg/autoscaler")},
		forbid: []string{thaw("pkg/activator"), thaw("pkg/lab"), thaw("pkg/experiment"), thaw("cmd")},
		reach:  transitive,
	},
	{
		name: "the shared floor depends on neither wing, the lab nor the experiments",
		from: floor,
		forbid: []string{thaw("pkg/activator"), thaw("pkg/autoscaler"), thaw("pkg/lab"), thaw("pkg/experiment"),
			thaw("cmd")},
		reach: transitive,
	},
	{
		name:   "the activator binary holds no autoscaler, lab or experiment code",
		from:   []string{thaw("cmd/activator")},
		forbid: []string{thaw("pkg/autoscaler"), thaw("pkg/lab"), thaw("pkg/experiment")},
		reach:  transitive,
	},
	{
		name:   "the autoscaler binary holds no activator, lab or experiment code",
		from:   []string{thaw("cmd/autoscaler")},
		forbid: []string{thaw("pkg/activator"), thaw("pkg/lab"), thaw("pkg/experiment")},
		reach:  transitive,
	},
	{
		name: "upstream's activator, autoscaler, reconciler and queue logic only in tests",
		from: []string{module},
		forbid: []string{"knative.dev/serving/pkg/activator", "knative.dev/serving/pkg/autoscaler",
			"knative.dev/serving/pkg/reconciler", "knative.dev/serving/pkg/queue"},
		reach: direct,
	},
}

// under reports whether path is prefix or a package below it, by whole
// path elements (pkg/activatorx is not under pkg/activator).
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func underAny(path string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return under(path, p) })
}

// check returns one line per broken rule edge, naming the importing package
// and the import (and, for a transitive one, the chain that leads there),
// plus one per rule that applies to no package at all, since a rule that
// matches nothing after a move would pass for ever.
func check(pkgs []pkg, rules []rule) []string {
	imports := make(map[string][]string, len(pkgs))
	for _, p := range pkgs {
		imports[p.ImportPath] = p.Imports
	}
	var out []string
	for _, r := range rules {
		applied := false
		for _, p := range pkgs {
			if !underAny(p.ImportPath, r.from) {
				continue
			}
			applied = true
			edges := p.Imports
			if r.reach == transitive {
				edges = p.Deps
			}
			for _, dep := range edges {
				if !underAny(dep, r.forbid) {
					continue
				}
				if slices.Contains(p.Imports, dep) {
					out = append(out, fmt.Sprintf("%s: %s imports %s", r.name, p.ImportPath, dep))
					continue
				}
				out = append(out, fmt.Sprintf("%s: %s depends on %s through %s", r.name, p.ImportPath, dep,
					strings.Join(chain(imports, p.ImportPath, dep), " -> ")))
			}
		}
		if !applied {
			out = append(out, fmt.Sprintf("%s: applies to no package (%s): update the rule and docs/ARCHITECTURE.md",
				r.name, strings.Join(r.from, ", ")))
		}
	}
	return out
}

// chain finds a shortest import chain from one package to another over the
// packages listed (breadth first); only this module's packages are listed,
// which is enough, as nothing outside the module imports it.
func chain(imports map[string][]string, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var path []string
			for n := to; n != ""; n = prev[n] {
				path = append(path, n)
			}
			slices.Reverse(path)
			return path
		}
		for _, next := range imports[cur] {
			if _, seen := prev[next]; !seen {
				prev[next] = cur
				queue = append(queue, next)
			}
		}
	}
	return []string{from, "?", to}
}

// unplaced lists the packages under pkg/ that belong to no group the
// architecture page names: a new package must join a wing, the lab, the
// experiments, the floor or the tools, here and on the page.
func unplaced(pkgs []pkg) []string {
	groups := append([]string{thaw("pkg/activator"), thaw("pkg/autoscaler"), thaw("pkg/lab"), thaw("pkg/experiment")},
		append(slices.Clone(floor), tools...)...)
	var out []string
	for _, p := range pkgs {
		if under(p.ImportPath, thaw("pkg")) && !underAny(p.ImportPath, groups) {
			out = append(out, p.ImportPath)
		}
	}
	return out
}

// goList runs `go list -e -json` over the whole module from the module's
// root. The go tool is needed: without it the rules cannot be read, and the
// test fails saying so rather than passing with nothing checked.
func goList(t *testing.T) []pkg {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to read the import graph and is not on PATH: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, gotool, "list", "-e", "-json=ImportPath,Imports,Deps,Error", module+"/...")
	cmd.Dir = "../.."
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	return decode(t, &stdout)
}

func decode(t *testing.T, r io.Reader) []pkg {
	t.Helper()
	var pkgs []pkg
	dec := json.NewDecoder(r)
	for {
		var p pkg
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding go list's output: %v", err)
		}
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list returned no package")
	}
	return pkgs
}

func TestImportRules(t *testing.T) {
	pkgs := goList(t)
	for _, v := range check(pkgs, rules) {
		t.Error(v)
	}
	for _, p := range unplaced(pkgs) {
		t.Errorf("%s sits at pkg/ outside every group of docs/ARCHITECTURE.md: move it into a wing, the lab or the "+
			"experiments, or add it to the floor or the tools here and on the page", p)
	}
}

// TestCheckFindsViolations runs the rules on made-up import graphs, so the
// checker is seen to fail on each kind of break, not only to pass on the tree.
func TestCheckFindsViolations(t *testing.T) {
	act, kpa, win := thaw("pkg/activator/throttler"), thaw("pkg/autoscaler/kpa"), thaw("pkg/autoscaler/window")
	wire, kin, cmdAct := thaw("pkg/wire"), thaw("pkg/lab/kingress"), thaw("cmd/activator")
	upRec := "knative.dev/serving/pkg/reconciler/autoscaling/kpa"
	upCfg := "knative.dev/serving/pkg/autoscaler/config"
	// every rule applies to some package of the base graph, so only the
	// broken edges a case adds are reported.
	base := []pkg{
		{ImportPath: act, Imports: []string{wire}, Deps: []string{wire}},
		{ImportPath: kpa, Imports: []string{win}, Deps: []string{win}},
		{ImportPath: win},
		{ImportPath: wire},
		{ImportPath: cmdAct, Imports: []string{act}, Deps: []string{act, wire}},
		{ImportPath: thaw("cmd/autoscaler"), Imports: []string{kpa}, Deps: []string{kpa, win}},
		{ImportPath: kin, Imports: []string{thaw("pkg/activator/proxy")}, Deps: []string{thaw("pkg/activator/proxy")}},
	}
	with := func(ps ...pkg) []pkg {
		out := slices.Clone(base)
		for _, p := range ps {
			i := slices.IndexFunc(out, func(q pkg) bool { return q.ImportPath == p.ImportPath })
			if i < 0 {
				out = append(out, p)
			} else {
				out[i] = p
			}
		}
		return out
	}
	tests := []struct {
		name string
		pkgs []pkg
		want []string // substrings, one per expected violation, in order
	}{{
		name: "the tree as it should be",
		pkgs: base,
	}, {
		name: "activator imports the autoscaler",
		pkgs: with(pkg{ImportPath: act, Imports: []string{win}, Deps: []string{win}}),
		want: []string{act + " imports " + win},
	}, {
		name: "activator reaches the autoscaler through the floor",
		pkgs: with(pkg{ImportPath: act, Imports: []string{wire}, Deps: []string{wire, win}},
			pkg{ImportPath: wire, Imports: []string{win}, Deps: []string{win}}),
		want: []string{
			act + " depends on " + win + " through " + act + " -> " + wire + " -> " + win,
			wire + " imports " + win,
		},
	}, {
		name: "autoscaler imports the lab",
		pkgs: with(pkg{ImportPath: kpa, Imports: []string{win, kin}, Deps: []string{win, kin}}),
		want: []string{kpa + " imports " + kin},
	}, {
		name: "the activator binary pulls the lab in",
		pkgs: with(pkg{ImportPath: cmdAct, Imports: []string{act, kin}, Deps: []string{act, wire, kin}}),
		want: []string{cmdAct + " imports " + kin},
	}, {
		name: "upstream's reconciler imported outside tests",
		pkgs: with(pkg{ImportPath: kpa, Imports: []string{win, upRec}, Deps: []string{win, upRec}}),
		want: []string{kpa + " imports " + upRec},
	}, {
		name: "upstream's autoscaler config reached only through its API types",
		pkgs: with(pkg{ImportPath: kpa, Imports: []string{win, "knative.dev/serving/pkg/apis/autoscaling"},
			Deps: []string{win, "knative.dev/serving/pkg/apis/autoscaling", upCfg}}),
	}, {
		name: "a path that only starts like a wing is not in it",
		pkgs: with(pkg{ImportPath: thaw("pkg/activatorx"), Imports: []string{win}, Deps: []string{win}}),
	}, {
		name: "a rule left with no package after a move",
		pkgs: []pkg{{ImportPath: act}, {ImportPath: kpa}, {ImportPath: wire}, {ImportPath: thaw("cmd/autoscaler")}},
		want: []string{"applies to no package (" + cmdAct + ")"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := check(tt.pkgs, rules)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d violations, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("violation %d = %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}
}

func TestUnplaced(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{thaw("pkg/activator/proxy"), false},
		{thaw("pkg/autoscaler/kpa"), false},
		{thaw("pkg/lab/kingress"), false},
		{thaw("pkg/experiment/replay/sim"), false},
		{thaw("pkg/workloop"), false},
		{thaw("pkg/cmwatch"), false},
		{thaw("pkg/swap"), false},
		{thaw("cmd/thaw"), false},
		{thaw("pkg/newthing"), true},
		{thaw("pkg/wirex"), true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := len(unplaced([]pkg{{ImportPath: tt.path}})) == 1; got != tt.want {
				t.Errorf("unplaced(%s) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}
