// Command thaw is Thaw's command line: `thaw lab ...` runs the local lab cluster, `thaw coldstart` the
// cold-start experiment. The top level leaves room for more (chaos).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand; run gets the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

func groups() map[string]map[string]command {
	return map[string]map[string]command{
		"lab":    labCommands(),
		"images": imagesCommands(),
		"chaos":  chaosCommands(),
	}
}

func usage(g map[string]map[string]command) {
	fmt.Fprintln(os.Stderr, "usage: thaw <group> <command> [flags] | thaw <command> [flags]")
	top := topCommands()
	tops := make([]string, 0, len(top))
	for n := range top {
		tops = append(tops, n)
	}
	sort.Strings(tops)
	for _, n := range tops {
		fmt.Fprintf(os.Stderr, "  thaw %-16s %s\n", n, top[n].summary)
	}
	names := make([]string, 0, len(g))
	for n := range g {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cmds := make([]string, 0, len(g[n]))
		for c := range g[n] {
			cmds = append(cmds, c)
		}
		sort.Strings(cmds)
		for _, c := range cmds {
			fmt.Fprintf(os.Stderr, "  thaw %s %-12s %s\n", n, c, g[n][c].summary)
		}
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := groups()
	args := os.Args[1:]
	// `thaw run` is the demo, what `make run` calls.
	if len(args) > 0 && args[0] == "run" {
		args = append([]string{"lab", "demo"}, args[1:]...)
	}
	if len(args) > 0 {
		if cmd, ok := topCommands()[args[0]]; ok {
			exit(cmd.run(ctx, args[1:]), args[:1])
			return
		}
	}
	if len(args) < 2 {
		usage(g)
		os.Exit(2)
	}
	cmds, ok := g[args[0]]
	if !ok {
		usage(g)
		os.Exit(2)
	}
	cmd, ok := cmds[args[1]]
	if !ok {
		usage(g)
		os.Exit(2)
	}
	exit(cmd.run(ctx, args[2:]), args[:2])
}

// exit reports a command's error and ends the process with its status.
func exit(err error, name []string) {
	if err == nil {
		return
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "thaw %s: %v\n", strings.Join(name, " "), err)
	os.Exit(1)
}
