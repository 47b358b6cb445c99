package redisroute

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
