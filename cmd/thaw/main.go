// Command thaw is Thaw's command line: `thaw lab ...` runs the local lab cluster. The top level leaves
// room for more groups (coldstart, chaos).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand; run gets the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

func groups() map[string]map[string]command {
	return map[string]map[string]command{
		"lab": labCommands(),
	}
}

func usage(g map[string]map[string]command) {
	fmt.Fprintln(os.Stderr, "usage: thaw <group> <command> [flags]")
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
	if err := cmd.run(ctx, args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "thaw %s %s: %v\n", args[0], args[1], err)
		os.Exit(1)
	}
}
