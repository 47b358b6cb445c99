package redisroute

import "github.com/redis/go-redis/v9"

// IsolatedFamilies and RefusedFamilies return the command families of the
// package doc, by name.
func IsolatedFamilies() map[string][]string { return familiesWhere(true) }
func RefusedFamilies() map[string][]string  { return familiesWhere(false) }

func familiesWhere(isolated bool) map[string][]string {
	m := map[string][]string{}
	for _, f := range families {
		if f.isolated == isolated {
			m[f.name] = f.cmds
		}
	}
	return m
}

// RouteHooks and GuardHooks return the hooks New and Guard install, for
// measuring their cost alone.
func RouteHooks(r *Router) redis.Hook { return routeHook{r} }
func GuardHooks() redis.Hook          { return guardHook{} }

// CommandSandbox is cmdSandbox: the sandbox of the context cmd was built with.
func CommandSandbox(cmd redis.Cmder) (string, bool) {
	s, ok := cmdSandbox(cmd)
	return s.ID, ok
}

// FullDuplexPlace is fullDuplexPlace: 0 off a full-duplex engine.
func FullDuplexPlace() int { return int(fullDuplexPlace()) }
