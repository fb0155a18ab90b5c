-- config.lua: reads loader.conf files (sample stand-in).
local config = {}

config.files = {"/boot/defaults/loader.conf", "/boot/loader.conf"}

function config.load()
	for _, f in ipairs(config.files) do
		print("Loading " .. f)
	end
end

return config
