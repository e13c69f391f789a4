package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// LocalBinDir is where the repo's own lab binaries go, relative to the repo root (gitignored).
const LocalBinDir = "bin/lab"

// PausePackage is the pause binary's package, relative to the repo root.
const PausePackage = "./pkg/lab/images/pause"

// buildLocal builds Thaw's components, the sample apps and pause from the checkout. The go build cache
// makes an unchanged binary cost a link at most, so these are not stamped.
func (b *builder) buildLocal(ctx context.Context, p *Paths) error {
	outDir := filepath.Join(b.root, LocalBinDir)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	build := func(name, pkg string) (string, error) {
		start := time.Now()
		out := filepath.Join(outDir, name)
		err := b.goBuild(ctx, b.root, []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg})
		if err != nil {
			return "", err
		}
		b.logf("build: %-24s %s built in %s", name, pkg, since(start))
		return out, nil
	}

	var err error
	if p.Pause, err = build("pause", PausePackage); err != nil {
		return fmt.Errorf("build pause: %w", err)
	}
	for _, c := range []string{"activator", "autoscaler"} {
		pkg := "./cmd/" + c
		if !hasMain(filepath.Join(b.root, pkg)) {
			p.ThawSkipped[c] = pkg + " has no main package yet"
			b.logf("build: %-24s skipped: %s", "thaw-"+c, p.ThawSkipped[c])
			continue
		}
		// Thaw's components are being written in parallel: one that does not compile yet is
		// reported and skipped, not fatal, so the lab still comes up with upstream's.
		out, err := build("thaw-"+c, pkg)
		if err != nil {
			p.ThawSkipped[c] = "does not compile: " + firstLines(err.Error(), 4)
			b.logf("build: %-24s skipped: %v", "thaw-"+c, err)
			continue
		}
		p.Thaw[c] = out
	}
	apps, err := appDirs(filepath.Join(b.root, "test", "apps"))
	if err != nil {
		return err
	}
	for _, app := range apps {
		out, err := build("app-"+app, "./test/apps/"+app)
		if err != nil {
			return fmt.Errorf("build app %s: %w", app, err)
		}
		p.Apps[app] = out
	}
	return nil
}

// findLocal fills p with the repo's binaries already built by an earlier Ensure.
func (b *builder) findLocal(p *Paths) {
	outDir := filepath.Join(b.root, LocalBinDir)
	exists := func(name string) (string, bool) {
		f := filepath.Join(outDir, name)
		fi, err := os.Stat(f)
		return f, err == nil && fi.Mode().IsRegular()
	}
	if f, ok := exists("pause"); ok {
		p.Pause = f
	}
	for _, c := range []string{"activator", "autoscaler"} {
		if f, ok := exists("thaw-" + c); ok {
			p.Thaw[c] = f
		} else {
			p.ThawSkipped[c] = "not built (build skipped)"
		}
	}
	apps, _ := appDirs(filepath.Join(b.root, "test", "apps"))
	for _, app := range apps {
		if f, ok := exists("app-" + app); ok {
			p.Apps[app] = f
		}
	}
}

// appDirs lists the sample apps: directories under dir holding a main package.
func appDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var apps []string
	for _, e := range entries {
		if e.IsDir() && hasMain(filepath.Join(dir, e.Name())) {
			apps = append(apps, e.Name())
		}
	}
	sort.Strings(apps)
	return apps, nil
}

// hasMain reports whether dir holds a non-test Go file of package main. It reads only the package
// clause, which is enough to skip placeholders and library directories.
func hasMain(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "package ") {
				if strings.TrimSpace(strings.TrimPrefix(line, "package ")) == "main" {
					return true
				}
				break
			}
		}
	}
	return false
}

// firstLines condenses a build error to its first few lines for a one-line report.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "; ")
}
