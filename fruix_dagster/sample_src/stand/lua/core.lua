-- core.lua: boot decisions (sample stand-in).
local core = {}

local single_user = false

function core.isSingleUserBoot()
	return false
end

function core.setSingleUser(v)
	single_user = v
end

function core.isMenuSkipped()
	return true
end

function core.autoboot()
	print("Booting" .. (single_user and " single user" or "") .. "...")
end

return core
